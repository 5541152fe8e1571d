"""One hub, many kernels (issue 26): fake kernels, a paced shutdown_all and its one summary line.

The kernels are kernel_hub.testing's fake kernel (a few MB each, see protokernel.py).
Nothing here asserts a time: the pacing is checked by what the kernels saw (how many
were ending at once) and by counts and log records.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource

import pytest
import zmq

from kernel_hub import KernelHub
from kernel_hub.managers.reaper import reaper
from kernel_hub.testing import FAKE_TYPE, fake_kernel_plugin, processes_with_env
from kernel_hub.wire.connection import runtime_dir
from kernel_hub.wire.context import hub_context


def fake_hub():
    return KernelHub(plugins=[fake_kernel_plugin()], load_entrypoints=False, config={})


async def launch_many(hub, n, *, env=None, at_once=10):
    """Launch *n* fake kernels, *at_once* at a time; return them in order."""
    gate = asyncio.Semaphore(at_once)

    async def one(i):
        async with gate:
            return await hub.launch(FAKE_TYPE, env={**(env or {}), "SCALE_TEST": str(i)})

    return await asyncio.gather(*(one(i) for i in range(n)))


def hub_records(caplog):
    return [r for r in caplog.records if r.name.startswith("kernel_hub")]


@pytest.fixture
def marker(monkeypatch):
    """An env var that every kernel of the test inherits, to find leftovers by."""
    value = f"scale-{os.getpid()}-{id(monkeypatch)}"
    monkeypatch.setenv("KERNEL_HUB_SCALE_TEST", value)
    return f"KERNEL_HUB_SCALE_TEST={value}"


def kernel_processes(marker):
    """The live processes carrying *marker*, but for the reaper (it inherits the env too)."""
    return [pid for pid in processes_with_env(marker) if pid != reaper().pid]


def assert_nothing_left(kernels, marker):
    assert not kernel_processes(marker)
    for kernel in kernels:
        assert not os.path.exists(kernel.state["connection_file"])
        assert not os.path.exists(kernel.state["log_file"])


@pytest.mark.asyncio
@pytest.mark.slow
async def test_shutdown_all_paces_itself_and_logs_one_line(tmp_path, caplog, marker):
    # 50 kernels that each take 0.3 s to exit; at most 5 are ended at a time, so the whole
    # takes >= 3 s: with 2 s counted from shutdown_all's start instead of from each kernel's
    # own request, the later ones would be killed.
    env = {"KERNEL_HUB_FAKE_SHUTDOWN_DELAY": "0.3", "KERNEL_HUB_FAKE_SHUTDOWN_DIR": str(tmp_path)}
    async with fake_hub() as hub:
        kernels = await launch_many(hub, 50, env=env)
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="kernel_hub"):
            report = await hub.shutdown_all(timeout=2.0, concurrency=5)
        assert (report.politely, report.killed, report.failed) == (50, 0, 0)
        assert not hub.kernels
        assert all(k.status == "DEAD" for k in kernels)
    seen = [int(p.read_text()) for p in tmp_path.glob("seen-*")]
    assert len(seen) == 50  # every kernel got its shutdown_request
    assert max(seen) <= 5  # ... and never more than 5 were ending at once
    assert not list(tmp_path.glob("active-*"))
    summaries = [r for r in hub_records(caplog) if r.levelno >= logging.INFO]
    assert [(r.levelname, r.getMessage().split(" in ")[0]) for r in summaries] == [
        ("INFO", "shut down 50 kernels")
    ]
    assert summaries[0].getMessage().endswith(": 50 ended politely, 0 killed")
    assert_nothing_left(kernels, marker)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_shutdown_all_counts_kills_in_one_warning(caplog, marker):
    async with fake_hub() as hub:
        polite = await launch_many(hub, 20)
        stuck = await launch_many(hub, 5, env={"KERNEL_HUB_FAKE_SHUTDOWN_DELAY": "inf"})
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="kernel_hub"):
            report = await hub.shutdown_all(timeout=1.0, concurrency=10)
        assert (report.politely, report.killed, report.failed) == (20, 5, 0)
    records = hub_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]  # no warning per kernel
    assert records[0].levelno == logging.WARNING
    assert (
        records[0]
        .getMessage()
        .endswith(": 20 ended politely, 5 killed (no exit within 1 s of their shutdown_request)")
    )
    assert str(report) == records[0].getMessage()
    assert_nothing_left([*polite, *stuck], marker)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_shutdown_all_now_and_empty(caplog, marker):
    async with fake_hub() as hub:
        with caplog.at_level(logging.INFO, logger="kernel_hub"):
            assert (await hub.shutdown_all()).total == 0
        assert not hub_records(caplog)  # nothing to say about no kernels
        kernels = await launch_many(hub, 10)
        with caplog.at_level(logging.INFO, logger="kernel_hub"):
            report = await hub.shutdown_all(now=True)
        assert (report.politely, report.killed) == (0, 10)
    [record] = hub_records(caplog)
    assert record.levelno == logging.INFO  # killing was asked for: nothing to warn about
    assert record.getMessage().endswith(": 10 killed (now=True)")
    assert_nothing_left(kernels, marker)


@pytest.mark.asyncio
@pytest.mark.slow
async def test_one_hub_holds_100_fake_kernels(marker):
    async with fake_hub() as hub:
        kernels = await launch_many(hub, 100)
        assert len(hub.kernels) == 100
        assert sorted(hub.kernels) == sorted(k.id for k in kernels)
        assert len({k.manager.pid for k in kernels}) == 100
        assert len(kernel_processes(marker)) == 100
        for kernel in kernels[::25]:  # a few of them, through the hub's registry
            async with hub.get(kernel.id).client() as client:
                reply = await client.execute(f"kernel {kernel.id}", timeout=30)
                assert reply.content["status"] == "ok"
        for kernel in kernels:  # each monitor reads its own socket, maybe a moment behind
            assert await kernel.wait_for_execution_state("idle", timeout=30) == "idle"
        report = await hub.shutdown_all()
        assert (report.politely, report.killed, report.failed) == (100, 0, 0)
        assert not hub.kernels
    assert_nothing_left(kernels, marker)
    assert not list(runtime_dir().glob(f"kernel-{kernels[0].id}*"))


def test_hub_context_holds_more_than_1023_sockets():
    # zmq.Context.instance() stops at 1,023 sockets (libzmq's default, fixed at the first
    # socket): a hub of 1,000 kernels needs one monitor socket each, plus clients.
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 3000:
        pytest.skip(f"ulimit -n is {soft}: the OS would refuse the fds before ZeroMQ does")
    ctx = hub_context()
    assert ctx is hub_context()
    assert ctx.get(zmq.MAX_SOCKETS) > 1023
    sockets = []
    try:
        for _ in range(1100):
            sockets.append(ctx.socket(zmq.SUB))
    finally:
        for sock in sockets:
            sock.close(0)
