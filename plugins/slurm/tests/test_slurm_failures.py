"""Launches that cannot work fail with one clear line naming the fix, and leave nothing behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import sysconfig

import kernel_hub_slurm.plugin
import pytest

from kernel_hub import KernelHub
from kernel_hub.conformance import load_plugins
from kernel_hub.provider import LaunchError
from kernel_hub.testing import free_ports

pytestmark = [pytest.mark.slurm]


def _hub(config):
    return KernelHub(plugin_manager=load_plugins([kernel_hub_slurm.plugin]), config=config)


async def _launch_error(table, **kwargs):
    async with _hub({"slurm": {"k": table}}) as hub:
        with pytest.raises(LaunchError) as info:
            await hub.launch("slurm/k", ready_timeout=120, **kwargs)
        assert not hub.kernels
    return str(info.value)


def _job_dirs(table):
    path = table["job_dir"]
    return os.listdir(path) if os.path.isdir(path) else []


@pytest.mark.asyncio
async def test_sbatch_rejects_a_bad_partition(slurm_cluster, slurm_table):
    msg = await _launch_error({**slurm_table, "partition": "nosuch"})
    assert msg == (
        "cannot launch slurm/k: sbatch rejected the job: invalid partition specified: nosuch; "
        "Batch job submission failed: Invalid partition name specified; fix the job fields in "
        "[slurm.k] (or the launch params)"
    )
    assert _job_dirs(slurm_table) == [] and slurm_cluster.jobs() == []


@pytest.mark.asyncio
async def test_slurm_tools_missing(slurm_cluster, slurm_table, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    msg = await _launch_error(slurm_table)
    assert msg.startswith("cannot launch slurm/k: Slurm's 'sbatch' is not on PATH on this machine")
    assert "apt-get install slurm-client" in msg
    assert _job_dirs(slurm_table) == []


@pytest.mark.asyncio
async def test_controller_down(slurm_cluster, slurm_table, tmp_path, monkeypatch):
    (dead,) = free_ports(1)  # nobody listens there
    conf = tmp_path / "slurm.conf"
    lines = slurm_cluster.conf.read_text().splitlines()
    conf.write_text(
        "".join(
            (f"SlurmctldPort={dead}" if ln.startswith("SlurmctldPort=") else ln) + "\n"
            for ln in lines
        )
    )
    monkeypatch.setenv("SLURM_CONF", str(conf))
    msg = await _launch_error(slurm_table)
    assert "Slurm's controller does not answer sbatch on this machine" in msg, msg
    assert "is slurmctld running and SLURM_CONF right? Check with: scontrol ping" in msg
    assert _job_dirs(slurm_table) == []


def _venv(path, *, link_pyzmq):
    """Make a venv without pip (with *link_pyzmq*, our pyzmq linked in); return its Python."""
    import zmq

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert sysconfig.get_paths()["purelib"] != site
    if link_pyzmq:
        ours = os.path.dirname(os.path.dirname(zmq.__file__))
        for name in ("zmq", "pyzmq.libs"):
            if os.path.exists(os.path.join(ours, name)):
                os.symlink(os.path.join(ours, name), os.path.join(site, name))
    return python


@pytest.fixture(scope="module")
def python_without_ipykernel(tmp_path_factory):
    """A Python with pyzmq but not ipykernel: the nanny runs, the kernel cannot."""
    return _venv(tmp_path_factory.mktemp("bare") / "venv", link_pyzmq=True)


@pytest.fixture(scope="module")
def python_without_pyzmq(tmp_path_factory):
    """A Python with neither: the nanny cannot even dial back."""
    return _venv(tmp_path_factory.mktemp("bare") / "venv", link_pyzmq=False)


@pytest.mark.asyncio
async def test_node_python_without_ipykernel(slurm_cluster, slurm_table, python_without_ipykernel):
    python = str(python_without_ipykernel)
    msg = await _launch_error({**slurm_table, "python": python})
    assert msg.startswith("the nanny of Slurm job "), msg
    assert msg.endswith(
        f"(slurm/k) failed: ipykernel is not installed for {python}; "
        f"run: {python} -m pip install ipykernel"
    ), msg
    assert _job_dirs(slurm_table) == []
    assert slurm_cluster.wait_queue_empty(60) == []


@pytest.mark.asyncio
async def test_node_python_without_pyzmq_reports_the_jobs_output(
    slurm_cluster, slurm_table, python_without_pyzmq
):
    python = str(python_without_pyzmq)
    msg = await _launch_error({**slurm_table, "python": python})
    assert "ended before its kernel started" in msg, msg
    assert f"pyzmq is not installed for {python}" in msg, msg
    assert "check python and setup in [slurm.k]" in msg
    assert _job_dirs(slurm_table) == []


@pytest.mark.asyncio
async def test_a_job_that_can_never_start_fails_at_once(slurm_cluster, slurm_table):
    # More CPUs than the only node has: Slurm takes the job and keeps it PENDING with reason
    # PartitionConfig for ever. The launch must say so now, not after start_timeout.
    table = {**slurm_table, "cpus": slurm_cluster.cpus + 1, "start_timeout": 600}
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    msg = await _launch_error(table)
    assert loop.time() - t0 < 30
    assert msg.startswith("Slurm job "), msg
    assert msg.endswith(
        " of slurm/k can never start (PartitionConfig): it asks for more than any node of its "
        "partition has (cpus, mem, gres); it was cancelled. Ask for less in [slurm.k] (or the "
        "launch params), or choose another partition"
    ), msg
    assert _job_dirs(slurm_table) == [] and slurm_cluster.jobs() == []
