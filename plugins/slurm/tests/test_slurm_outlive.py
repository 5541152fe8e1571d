"""A Slurm kernel of a hub with a state dir outlives its host and is adopted (issue 23).

The host runs in its own process on the real one-node cluster, sets ``x = 42`` and is
killed with SIGKILL; a new hub on the same state dir adopts the job's kernel, which still
knows ``x``. The job's nanny lease is the hub's grace, not the table's shorter one.
"""

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
from typing import Any

import pytest

from kernel_hub import KernelHub

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(400)]

HOST = textwrap.dedent(
    """
    import asyncio, json, sys
    from kernel_hub import KernelHub

    async def main():
        config = {"slurm": {"box": json.loads(sys.argv[2])}}
        hub = KernelHub(state_dir=sys.argv[1], grace=600, config=config)
        await hub.adopt()
        kernel = await hub.launch("slurm/box")
        async with kernel.client() as client:
            await client.execute("x = 42", timeout=120)
        print(json.dumps(kernel.describe()), flush=True)
        sys.stdin.readline()  # until the test kills this process

    asyncio.run(main())
    """
)


async def _printed_x(kernel: Any) -> str:
    out: list[str] = []

    def hook(msg: Any) -> None:
        if msg.header["msg_type"] == "stream":
            out.append(msg.content.get("text", ""))

    async with kernel.client() as client:
        await client.execute("print(x)", timeout=120, output_hook=hook)
    return "".join(out).strip()


def test_a_slurm_kernel_outlives_a_killed_host_and_is_adopted(
    slurm_cluster: Any, slurm_table: dict[str, Any], tmp_path: Path
) -> None:
    table = {**slurm_table, "lease": 5}  # the grace (600 s) wins over the table's lease
    state_dir = tmp_path / "state"
    env = {**os.environ, **slurm_cluster.env}
    with open(tmp_path / "host.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOST, str(state_dir), json.dumps(table)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, (tmp_path / "host.log").read_text()[-3000:]
        described = json.loads(line)
        job = str(described["state"]["job_id"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        killed = time.monotonic()
        assert job in slurm_cluster.jobs()
        # Let the table's lease (5 s) run out: a nanny leased for it alone would end the
        # kernel now (the old behaviour); the hub's grace keeps it for the next host.
        time.sleep(max(0.0, killed + 3 * table["lease"] - time.monotonic()))
        assert job in slurm_cluster.jobs()

        async def adopt() -> None:
            hub = KernelHub(state_dir=state_dir, config={"slurm": {"box": table}})
            async with hub:
                (kernel,) = hub.kernels.values()
                assert kernel.id == described["kernel_id"]
                assert await _printed_x(kernel) == "42"

        asyncio.run(adopt())
        assert slurm_cluster.wait_queue_empty(timeout=120) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        for job in slurm_cluster.jobs():
            slurm_cluster.run("scancel", job, check=False)
