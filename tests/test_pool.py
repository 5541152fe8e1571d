"""Warm pools (issue 26 item 1): ready kernels handed out by ``hub.launch``, real processes.

The burst test runs the protocol-speaking fake kernel (a real process, cheap to start);
the others a real ipykernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from kernel_hub import KernelHub, LaunchError
from kernel_hub.testing import (
    FAKE_TYPE,
    fake_kernel_plugin,
    processes_with_env,
    wait_pid_gone,
)

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PYTHON = "ipykernel/python3"


def kernel_pid(kernel) -> int:
    return int(kernel.manager.pid)


async def test_a_launch_takes_a_ready_kernel_from_the_pool_and_the_pool_refills():
    events = []
    async with KernelHub(config={}) as hub:
        hub.events.subscribe(events.append)
        pool = await hub.pool(PYTHON, size=1, restart=False)
        await pool.wait_full(timeout=120)
        (spare,) = pool.spares
        assert spare.id not in hub.kernels  # a spare is not the host's kernel yet
        kernel = await hub.launch(PYTHON, restart=False)
        assert kernel is spare and kernel.status == "RUNNING"
        assert hub.kernels[kernel.id] is kernel and pool.handed_out == 1
        handed = [e for e in events if e.kernel_id == kernel.id and e.kind == "ready"]
        assert [e.data for e in handed] == [{"pool": True}, {"pooled": True}]
        async with kernel.client() as client:
            reply = await client.execute("x = 6 * 7", timeout=60)
            assert reply.content["status"] == "ok"
        # Handed out once: the pool starts another, and the next launch gets that one.
        await pool.wait_full(timeout=120)
        (second,) = pool.spares
        assert second is not kernel
        assert await hub.launch(PYTHON, restart=False) is second


async def test_a_request_unlike_the_pools_starts_its_own_kernel():
    async with KernelHub(config={}) as hub:
        pool = await hub.pool(PYTHON, size=1, restart=False, adapt=False)
        await pool.wait_full(timeout=120)
        (spare,) = pool.spares
        other = await hub.launch(PYTHON, restart=False, env={"KH_POOL_TEST": "other"})
        assert other is not spare and pool.spares == [spare] and pool.handed_out == 0
        # Params are never adapted, whatever the pool's adapt.
        assert (await hub.pool(PYTHON, size=1, restart=False, adapt=True)) is pool
        params = await hub.launch(PYTHON, restart=False, params={"kh_pool_test": 1})
        assert params is not spare and pool.spares == [spare] and pool.handed_out == 0


async def test_a_burst_of_launches_is_served_and_the_pool_never_holds_more_than_its_size():
    marker = f"KH_POOL_BURST={os.getpid()}"
    name, value = marker.split("=")
    spares_seen = []
    hub = KernelHub(plugins=[fake_kernel_plugin()], load_entrypoints=False, config={})
    try:
        pool = await hub.pool(FAKE_TYPE, size=2, env={name: value}, restart=False)
        hub.events.subscribe(lambda e: spares_seen.append(len(pool.spares) + pool.starting))
        await pool.wait_full(timeout=120)
        kernels = await asyncio.gather(
            *(hub.launch(FAKE_TYPE, env={name: value}, restart=False) for _ in range(10))
        )
        assert len({k.id for k in kernels}) == 10  # every launch served, each its own kernel
        assert pool.handed_out >= 2  # the two ready ones went to the first launches
        assert max(spares_seen) <= 2
        await pool.wait_full(timeout=120)
        assert len(pool.spares) == 2
        pids = {kernel_pid(k) for k in [*kernels, *pool.spares]}
        assert len(pids) == 12
    finally:
        await hub.shutdown_all()
    assert pool.spares == [] and hub.pools == []
    for pid in pids:
        assert wait_pid_gone(pid, 30)
    assert processes_with_env(marker) == []  # none leaked


async def test_a_spare_that_dies_is_restarted_in_the_pool_then_handed_out():
    async with KernelHub(config={}) as hub:
        pool = await hub.pool(PYTHON, size=1)  # the type's restart policy: on
        await pool.wait_full(timeout=120)
        (spare,) = pool.spares
        old_pid = kernel_pid(spare)
        restarted = asyncio.Event()
        hub.events.subscribe(lambda e: e.kind == "restarted" and restarted.set())
        os.kill(old_pid, signal.SIGKILL)
        async with asyncio.timeout(120):
            await restarted.wait()
        assert pool.spares == [spare] and kernel_pid(spare) != old_pid
        kernel = await hub.launch(PYTHON)
        assert kernel is spare
        async with kernel.client() as client:
            assert (await client.execute("1", timeout=60)).content["status"] == "ok"


async def test_shutdown_all_ends_the_spares_and_a_resize_to_zero_removes_the_pool():
    async with KernelHub(config={}) as hub:
        pool = await hub.pool(PYTHON, size=2, restart=False)
        await pool.wait_full(timeout=120)
        pids = [kernel_pid(k) for k in pool.spares]
        same = await hub.pool(PYTHON, size=1, restart=False)  # the same request: resized
        assert same is pool and len(pool.spares) == 1
        gone = [p for p in pids if kernel_pid(pool.spares[0]) != p]
        assert wait_pid_gone(gone[0], 30)
        report = await hub.shutdown_all()
        assert report.total == 1 and hub.pools == []
        assert all(wait_pid_gone(p, 30) for p in pids)
        # Closed: nothing refills it.
        assert pool.spares == [] and pool.starting == 0


async def test_a_pool_whose_kernels_cannot_start_backs_off_and_says_so(
    tmp_path, caplog, monkeypatch
):
    spec = tmp_path / "share" / "kernels" / "broken"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-c", "import sys; sys.exit(3)", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "broken"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share"))
    async with KernelHub(config={}) as hub:
        pool = await hub.pool("spec/broken", size=1, restart=False)
        with pytest.raises(LaunchError):
            await pool.wait_full(timeout=120)  # the first failed start is told
        assert pool.failures == 1 and pool.spares == []
        # Backing off (1 s, doubling): no start in progress until the retry time comes.
        assert pool.starting == 0
        with pytest.raises(LaunchError):
            await hub.launch("spec/broken", restart=False)  # a cold start, same error
    assert hub.pools == []
    assert any("did not start" in r.getMessage() for r in caplog.records)


async def test_a_pool_of_an_unknown_type_fails_at_once():
    from kernel_hub import NoSuchKernelType

    async with KernelHub(config={}) as hub:
        with pytest.raises(NoSuchKernelType):
            await hub.pool("ipykernel/no-such-kernel", size=1)
        with pytest.raises(ValueError, match="0 or more"):
            await hub.pool(PYTHON, size=-1)
        with pytest.raises(ValueError):
            await hub.pool(PYTHON, size=1, env={"A": 1})  # type: ignore[dict-item]
        assert hub.pools == []
