"""The registration handshake (JEP 66) in a Slurm job, with a real xeus-python 0.19.

A table that says ``kernel_protocol_version = "5.6"`` (or a launch with
``params={"registration": True}``) has the job's nanny start the kernel with the
handshake: the kernel binds its own ports on the node and reports them to the nanny,
which dials back to this host with those. The kernels run through :data:`SNAPSHOT`,
which first copies the file the kernel is given, so a test sees that it held no port.
xeus-python comes with this plugin's ``test`` extra (and the workspace's dev group).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path

import kernel_hub_slurm.plugin
import pytest

from kernel_hub import KernelHub
from kernel_hub.conformance import execute_output, load_plugins
from kernel_hub.provider import LaunchError
from kernel_hub.testing import processes_running, require_service, wait_gone

pytestmark = [pytest.mark.slurm, pytest.mark.integration, pytest.mark.thirdparty]

#: The kernel's five channels, as named in a connection file.
PORTS = ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]

#: ``sh -c SNAPSHOT snap FILE DIR ARGV...``: copy FILE into DIR as ``<n>.json`` and write its
#: path into ``<n>.path`` (n: one more each start), then run ARGV in the shell's place.
SNAPSHOT = (
    'n=$(ls "$2" | grep -c "json$"); cp "$1" "$2/$n.json" && echo "$1" > "$2/$n.path" '
    '&& shift 2 && exec "$@"'
)

TIMEOUT = 120


def _hub(config):
    return KernelHub(plugin_manager=load_plugins([kernel_hub_slurm.plugin]), config=config)


def _argv(snaps: Path, module: str) -> list[str]:
    kernel = [sys.executable, "-m", module, "-f", "{connection_file}"]
    return ["/bin/sh", "-c", SNAPSHOT, "snap", "{connection_file}", str(snaps), *kernel]


def _given(snaps: Path, n: int) -> dict:
    return json.loads((snaps / f"{n}.json").read_text())


def _workdir(snaps: Path, n: int) -> str:
    """Return the nanny's work dir on the node, where the *n*-th start's file was."""
    return os.path.dirname((snaps / f"{n}.path").read_text().strip())


def _reported(job_log: Path) -> list[dict[str, int]]:
    """Return the ports the job's nanny logged as reported by its kernel (the job's output)."""
    marker = "reported its ports on the registration socket: "
    return [
        json.loads(line.partition(marker)[2])
        for line in job_log.read_text().splitlines()
        if marker in line
    ]


async def _gone_from_queue(cluster, job_id, timeout=60):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while job_id in cluster.jobs() and loop.time() < deadline:
        await asyncio.sleep(0.2)  # polling squeue: a job's end has no event for us
    return job_id not in cluster.jobs()


async def _answers(kernel) -> None:
    async with kernel.client() as client:
        reply, text = await execute_output(client, "print(6*7)", timeout=TIMEOUT)
    assert reply["status"] == "ok" and text.strip() == "42", (reply, text)


@pytest.fixture
def snaps(tmp_path: Path) -> Path:
    require_service(
        "xeus-python",
        importlib.util.find_spec("xpython_launcher") is not None,
        "pip install 'kernel-hub-slurm[test]' (it brings xeus-python 0.19)",
    )
    path = tmp_path / "snapshots"
    path.mkdir()
    return path


@pytest.mark.asyncio
@pytest.mark.timeout(600)
async def test_the_kernel_binds_and_reports_its_ports_on_the_node(
    slurm_cluster, slurm_table, snaps
):
    table = {
        **slurm_table,
        "argv": _argv(snaps, "xpython_launcher"),
        "kernel_protocol_version": "5.6",
        "interrupt_mode": "message",
    }
    async with _hub({"slurm": {"x": table}}) as hub:
        kernel = await hub.launch("slurm/x", ready_timeout=TIMEOUT, restart=False)
        state = kernel.manager.describe()
        job_id, job_dir = state["job_id"], state["job_dir"]
        try:
            first = _given(snaps, 0)
            # No port was chosen for it: its file names the nanny's registration socket only.
            assert not set(PORTS) & set(first), first
            assert first["registration_ip"] == "127.0.0.1"
            assert first["registration_port"].isdigit()
            # The nanny dialled back with the ports the kernel reported, and clients use them.
            remote = {p: state["remote_info"][p] for p in PORTS}
            assert _reported(Path(job_dir, "job.log")) == [remote]
            assert {p: kernel.connection_info[p] for p in PORTS} == remote
            await _answers(kernel)
            # In place, through the nanny (the same job): the kernel gets the ports it reported.
            await kernel.manager.restart()
            await _answers(kernel)  # the new process answers: it took its file long before
            again = _given(snaps, 1)
            assert {p: again[p] for p in PORTS} == remote
            assert "registration_port" not in again
        finally:
            await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, job_id)
    workdir = _workdir(snaps, 0)
    assert await asyncio.to_thread(wait_gone, [p for p, _ in processes_running(workdir)]) == []
    assert not os.path.exists(workdir) and not os.path.exists(job_dir)


@pytest.mark.asyncio
@pytest.mark.timeout(300)
async def test_a_kernel_that_never_reports_fails_naming_the_type_and_leaves_nothing(
    slurm_cluster, slurm_table, snaps, tmp_path
):
    # ipykernel has no handshake: a table that claims 5.6 for it never gets a report.
    table = {**slurm_table, "argv": _argv(snaps, "ipykernel_launcher")}
    tables = {"claims": {**table, "kernel_protocol_version": "5.6"}, "plain": table}
    async with _hub({"slurm": tables}) as hub:
        with pytest.raises(LaunchError) as err:
            await hub.launch("slurm/claims", params={"registration_timeout": 3})
        message = str(err.value)
        assert "(slurm/claims) failed: " in message, message
        assert "did not report its ports on the registration socket within 3 s" in message
        assert 'kernel_protocol_version = "5.6" in [slurm.claims]: remove that line' in message
        # The kernel was given no ports; the nanny ended it and removed its work dir before
        # it sent the error (not left to the job's end, nor to the next nanny's sweep).
        assert not set(PORTS) & set(_given(snaps, 0))
        workdir = _workdir(snaps, 0)
        assert processes_running(workdir) == []
        assert not os.path.exists(workdir)
        # The same kernel without the handshake (the launch param) starts on given ports.
        kernel = await hub.launch(
            "slurm/claims", params={"registration": False}, ready_timeout=TIMEOUT
        )
        try:
            remote = kernel.manager.describe()["remote_info"]
            assert {p: _given(snaps, 1)[p] for p in PORTS} == {p: remote[p] for p in PORTS}
            await _answers(kernel)
        finally:
            await kernel.shutdown()
        # A bad param fails before anything is submitted.
        with pytest.raises(LaunchError, match="launch param 'registration' must be true or false"):
            await hub.launch("slurm/plain", params={"registration": 1})
    # The failed start's job and job dir are gone too.
    assert slurm_cluster.wait_queue_empty(60) == []
    assert list((tmp_path / "jobs").iterdir()) == []
    assert sorted(p.name for p in snaps.iterdir()) == ["0.json", "0.path", "1.json", "1.path"]
