"""Slurm kernels on a real one-node cluster: launch, execute, interrupt, restart, failures."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import kernel_hub_slurm.plugin
import pytest

from kernel_hub import KernelHub
from kernel_hub.conformance import execute_output, load_plugins
from kernel_hub.provider import ConfigError, LaunchError

pytestmark = [pytest.mark.slurm, pytest.mark.integration]


def _hub(config):
    return KernelHub(plugin_manager=load_plugins([kernel_hub_slurm.plugin]), config=config)


def _processes_holding(text):
    """Return the pids whose command line or environment contains *text*."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{entry}/{part}").read_bytes()
            except OSError:
                continue
            if text.encode() in data:
                found.append((int(entry), part))
    return found


@pytest.mark.asyncio
async def test_launch_execute_shutdown_and_the_key_stays_private(
    slurm_cluster, slurm_table, tmp_path
):
    events = []
    async with _hub({"slurm": {"k": slurm_table}}) as hub:
        hub.events.subscribe(events.append)
        kernel = await hub.launch("slurm/k", ready_timeout=120, params={"time": "00:30:00"})
        state = kernel.manager.describe()
        job_id = state["job_id"]
        assert job_id in slurm_cluster.jobs()
        info = kernel.connection_info
        assert state["nanny_endpoints"] == {
            "control": f"tcp://127.0.0.1:{info['nanny_control_port']}",
            "events": f"tcp://127.0.0.1:{info['nanny_events_port']}",
        }
        assert repr(kernel.manager).startswith(f"<SlurmKernelManager slurm/k [RUNNING job={job_id}")
        shown = slurm_cluster.run("scontrol", "show", "-d", "job", job_id)
        assert "TimeLimit=00:30:00" in shown and "NumCPUs=1" in shown, shown
        async with kernel.client() as client:
            content, text = await execute_output(client, "print(6*7)", timeout=60)
            assert content["status"] == "ok" and text.strip() == "42"
        # The key is nowhere another user (or a process listing) could read it.
        key = kernel.connection_info["key"]
        assert len(key) == 64
        script = slurm_cluster.run("scontrol", "write", "batch_script", job_id, "-")
        assert "nanny.py --register" in script
        for text in (shown, script):
            assert key not in text
        assert _processes_holding(key) == []
        job_dir = state["job_dir"]
        assert os.stat(job_dir).st_mode & 0o777 == 0o700
        # register.json was read and deleted by the nanny
        assert sorted(os.listdir(job_dir)) == ["job.log", "job_id", "nanny.py"]
        for name in os.listdir(job_dir):
            assert key not in Path(job_dir, name).read_text()
        await kernel.shutdown()
    steps = [e.data.get("step") for e in events if e.kind == "progress"]
    assert steps[:2] == ["submitting", "submitted"] and "registered" in steps, steps
    assert await _wait_not_queued(slurm_cluster, job_id)
    assert not os.path.exists(job_dir)


@pytest.mark.asyncio
async def test_unknown_launch_param_is_refused(slurm_cluster, slurm_table):
    async with _hub({"slurm": {"k": slurm_table}}) as hub:
        with pytest.raises(ConfigError, match="'walltime' are not known to slurm/k"):
            await hub.launch("slurm/k", params={"walltime": "1"})
        with pytest.raises(ConfigError, match="field 'time' 'soon' is not a Slurm time limit"):
            await hub.launch("slurm/k", params={"time": "soon"})
    assert slurm_cluster.jobs() == []


def _queued(cluster, job_id):
    return job_id in cluster.jobs()


async def _wait_not_queued(cluster, job_id, timeout=60):
    deadline = asyncio.get_running_loop().time() + timeout
    while _queued(cluster, job_id) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)  # polling squeue: a job's end has no event for us
    return not _queued(cluster, job_id)


def _block_cpus(cluster):
    """Submit a job that holds every CPU of the node; return its id once it runs."""
    job = cluster.run(
        "sbatch", "--parsable", f"-c{cluster.cpus}", "-o/dev/null", "--wrap", "sleep 600"
    ).strip()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if cluster.idle_cpus() == 0:
            return job
        time.sleep(0.1)  # polling sinfo until the blocker runs
    cluster.run("scancel", job, check=False)
    raise AssertionError(f"the blocking job {job} did not start")


@pytest.mark.asyncio
async def test_pending_job_reports_progress_and_cancel_leaves_nothing(
    slurm_cluster, slurm_table, tmp_path
):
    blocker = _block_cpus(slurm_cluster)
    try:
        events = []
        pending = asyncio.Event()

        def on_event(e):
            events.append(e)
            # The first report may say "None": the scheduler has not looked at the job yet.
            if e.kind == "progress" and e.data.get("reason") in ("Resources", "Priority"):
                pending.set()

        async with _hub({"slurm": {"k": slurm_table}}) as hub:
            hub.events.subscribe(on_event)
            task = asyncio.ensure_future(hub.launch("slurm/k", ready_timeout=120))
            await asyncio.wait_for(pending.wait(), 120)
            progress = next(e for e in events if e.data.get("reason") in ("Resources", "Priority"))
            job_id = progress.data["job_id"]
            assert progress.data["state"] == "PENDING", progress.data
            assert progress.data["queue_position"] == 1, progress.data
            assert "pending" in progress.data["message"]
            assert _queued(slurm_cluster, job_id)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert not hub.kernels
        assert await _wait_not_queued(slurm_cluster, job_id)
        shown = slurm_cluster.run("scontrol", "show", "-o", "job", job_id, check=False)
        assert "JobState=CANCELLED" in shown, shown
        assert list((tmp_path / "jobs").iterdir()) == []  # the job's directory is gone
    finally:
        slurm_cluster.run("scancel", blocker, check=False)
        await _wait_not_queued(slurm_cluster, blocker)


@pytest.mark.asyncio
async def test_start_timeout_cancels_the_pending_job(slurm_cluster, slurm_table, tmp_path):
    blocker = _block_cpus(slurm_cluster)
    try:
        async with _hub({"slurm": {"k": slurm_table}}) as hub:
            with pytest.raises(LaunchError) as info:
                await hub.launch("slurm/k", params={"start_timeout": 3})
        msg = str(info.value)
        assert "did not start its kernel within 3 s" in msg and "start_timeout" in msg, msg
        job_id = msg.split("Slurm job ")[1].split()[0]
        assert await _wait_not_queued(slurm_cluster, job_id)
        assert list((tmp_path / "jobs").iterdir()) == []
    finally:
        slurm_cluster.run("scancel", blocker, check=False)
        await _wait_not_queued(slurm_cluster, blocker)


def test_kernel_hub_run_cli(slurm_cluster, slurm_table, tmp_path):
    config = tmp_path / "config.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in slurm_table.items()]
    config.write_text("[slurm.k]\n" + "\n".join(lines) + "\n")
    env = {**os.environ, "KERNEL_HUB_CONFIG": str(config)}
    proc = subprocess.run(
        [sys.executable, "-m", "kernel_hub", "run", "slurm/k", "-c", "print(6*7)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "42"
    assert slurm_cluster.wait_queue_empty(60) == []


@pytest.mark.asyncio
async def test_a_slurm_kernel_speaks_curve_and_its_keys_stay_private_across_a_restart(
    slurm_cluster, slurm_table
):
    """Issue 24: the host chooses the Curve keys, the job gets them only in its 0600 file."""
    from kernel_hub.testing import Sniffer

    async with _hub({"slurm": {"k": slurm_table}}) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        info = dict(kernel.connection_info)
        assert info["curve_publickey"] and info["curve_secretkey"]
        for ports in (
            info,
            {
                "ip": info["ip"],
                "shell_port": info["nanny_control_port"],
                "iopub_port": info["nanny_events_port"],
            },
        ):
            sniffer = Sniffer(ports)
            try:
                assert await asyncio.to_thread(sniffer.handshake, "shell") is False
                assert await asyncio.to_thread(sniffer.handshake, "iopub") is False
            finally:
                sniffer.close()
        state = kernel.manager.describe()
        shown = slurm_cluster.run("scontrol", "show", "-d", "job", state["job_id"])
        for secret in (info["curve_publickey"], info["curve_secretkey"]):
            assert secret not in shown
            assert _processes_holding(secret) == []
            for name in os.listdir(state["job_dir"]):
                assert secret not in Path(state["job_dir"], name).read_text()
        async with kernel.client() as client:
            content, text = await execute_output(client, "print(6*7)", timeout=60)
            assert content["status"] == "ok" and text.strip() == "42"
        await kernel.restart()
        assert kernel.connection_info["curve_publickey"] == info["curve_publickey"]
        async with kernel.client() as client:
            content, text = await execute_output(client, "print(7*6)", timeout=60)
            assert content["status"] == "ok" and text.strip() == "42"
        await kernel.shutdown()
