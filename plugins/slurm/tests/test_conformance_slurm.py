"""The provider conformance suite, run on the slurm plugin against a real one-node cluster.

The compute node is this machine, so what a job leaves behind (nanny, kernel,
the nanny's work dir, the job's directory) is checked on this machine.
"""

from __future__ import annotations

import asyncio
import os
import time

import kernel_hub_slurm.plugin
import pytest

from kernel_hub.provider import pid_alive
from kernel_hub.testing import ProviderConformance


def _wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if pid_alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)  # a process's end in another process tree has no event for us


class TestSlurmConformance(ProviderConformance):
    pytestmark = [pytest.mark.slurm]
    plugins = [kernel_hub_slurm.plugin]
    type_ids = ["slurm/conformance"]
    launch_timeout = 120.0
    timeout = 60.0
    interrupt_timeout = 30.0

    @pytest.fixture
    def conformance_setup(self, slurm_cluster, slurm_table):
        self.cluster = slurm_cluster
        return {"slurm": {"conformance": slurm_table}}

    async def assert_nothing_left(self, kernel, state):
        await super().assert_nothing_left(kernel, state)
        pids = [state[k] for k in ("nanny_pid", "kernel_pid") if state.get(k)]
        alive = await asyncio.to_thread(_wait_gone, pids, self.timeout)
        assert not alive, f"processes {alive} of job {state['job_id']} outlived the kernel"
        deadline = time.monotonic() + self.timeout
        while state["job_id"] in self.cluster.jobs() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # polling squeue: a job's end has no event for us
        assert state["job_id"] not in self.cluster.jobs(), f"job {state['job_id']} is still queued"
        assert not os.path.exists(state["job_dir"]), f"job dir {state['job_dir']} left behind"
        assert not os.path.exists(state["workdir"]), f"nanny work dir {state['workdir']} left"
