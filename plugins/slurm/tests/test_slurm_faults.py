"""Faults: the host is SIGKILLed while its kernel's job waits in the queue; nothing may leak."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kernel_hub_slurm.cluster import LocalRunner, SlurmCLI
from kernel_hub_slurm.launch import sweep_job_dirs

from kernel_hub.testing import processes_with_env

pytestmark = [pytest.mark.slurm, pytest.mark.integration]

_HOST = textwrap.dedent(
    """
    import asyncio, json, sys
    import kernel_hub_slurm.plugin
    from kernel_hub import KernelHub
    from kernel_hub.conformance import load_plugins

    async def main():
        config = json.loads(sys.stdin.read())
        pm = load_plugins([kernel_hub_slurm.plugin])
        async with KernelHub(plugin_manager=pm, config=config) as hub:
            hub.events.subscribe(lambda e: print(json.dumps(dict(e.data)), flush=True))
            await hub.launch("slurm/k", ready_timeout=120)

    asyncio.run(main())
    """
)


@pytest.mark.timeout(300)
@pytest.mark.asyncio
async def test_host_killed_while_pending_leaves_no_job_and_no_process(slurm_cluster, slurm_table):
    table = {**slurm_table, "register_timeout": 5}
    blocker = slurm_cluster.run(
        "sbatch", "--parsable", f"-c{slurm_cluster.cpus}", "-o/dev/null", "--wrap", "sleep 600"
    ).strip()
    host = None
    try:
        host = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOST,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        host.stdin.write(json.dumps({"slurm": {"k": table}}).encode())
        host.stdin.close()
        job_id = None
        async with asyncio.timeout(120):
            while True:
                line = await host.stdout.readline()
                assert line, "the host exited before its job was pending"
                data = json.loads(line)
                if data.get("state") == "PENDING":
                    job_id = data["job_id"]
                    break
        host.kill()  # SIGKILL: the host can clean up nothing
        await host.wait()
        job_dir = None
        for name in os.listdir(table["job_dir"]):
            if (Path(table["job_dir"], name, "job_id")).read_text() == job_id:
                job_dir = str(Path(table["job_dir"], name))
        assert job_dir is not None
        slurm_cluster.run("scancel", blocker)  # now the orphan job starts ...
        deadline = time.monotonic() + 120
        while job_id in slurm_cluster.jobs() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # polling squeue: a job's end has no event for us
        # ... its nanny gets no answer within register_timeout, ends its kernel and exits.
        assert job_id not in slurm_cluster.jobs(), f"the orphan job {job_id} is still queued"
        shown = slurm_cluster.run("scontrol", "show", "-o", "job", job_id, check=False)
        assert "JobState=FAILED" in shown, shown  # it ran and exited 1: it did not time out
        log = Path(job_dir, "job.log").read_text()
        assert "did not acknowledge the registration; exiting" in log, log
        assert processes_with_env(f"SLURM_JOB_ID={job_id}") == []  # nanny and kernel gone
        # The dead host's job dir is swept by the next launch (here: the sweep it runs).
        removed = await sweep_job_dirs(LocalRunner(), SlurmCLI(LocalRunner()), table["job_dir"])
        assert removed == [job_dir] and not os.path.exists(job_dir)
    finally:
        if host is not None and host.returncode is None:
            os.kill(host.pid, signal.SIGKILL)
            await host.wait()
        slurm_cluster.run("scancel", blocker, check=False)
