"""Benchmark: Slurm kernel start → ready, kernel_hub-slurm against a bare sbatch script.

Both sides submit to the same real one-node Slurm cluster (the test kit's
:func:`kernel_hub_slurm_testing.start_cluster`, 2 CPUs, jobs of 1 CPU), run
the same Python's ipykernel on the node, and count as "ready" the same thing:
``kernel_info`` answered and IOPub delivering (``wait_for_ready``).

- **kernel_hub**: ``hub.launch("slurm/box")``: private job dir, nanny copy and
  0600 registration file, ``sbatch``, one ``squeue`` look, the nanny's signed
  dial-back, then wait for the kernel.
- **bare sbatch**: write a 0600 connection file here (the node shares this
  disk), ``sbatch --wrap "exec python -m ipykernel_launcher -f FILE"``, and poll
  ``kernel_info`` until it answers. No nanny (no interrupt/kill/restart through
  it, no re-attach, no progress, ports guessed on the host): the floor.

Run (as root, with slurm-wlm installed): ``uv run python bench/slurm_bench.py [-n 7]``.
Target: ratio ≤ 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kernel_hub_slurm.plugin as plugin
from kernel_hub_slurm_testing import start_cluster

from kernel_hub import AsyncKernelClient, KernelHub
from kernel_hub.wire.connection import new_connection_info, write_connection_file


async def bare_sbatch(tmp: Path) -> float:
    """Submit ipykernel with a host-written connection file, wait until ready; return seconds."""
    t0 = time.perf_counter()
    info = new_connection_info()
    path = tmp / f"kernel-{info['shell_port']}.json"
    write_connection_file(info, path)
    proc = await asyncio.create_subprocess_exec(
        "sbatch",
        "--parsable",
        "-c1",
        "-o/dev/null",
        "--wrap",
        f"exec {sys.executable} -m ipykernel_launcher -f {path}",
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    job = out.decode().strip()
    client = AsyncKernelClient(info)
    await client.connect()
    try:
        await client.wait_for_ready(120)
    finally:
        await client.close()
    elapsed = time.perf_counter() - t0
    subprocess.run(["scancel", job], check=True)
    os.unlink(path)
    return elapsed


async def with_kernel_hub(hub: KernelHub) -> float:
    """Launch slurm/box through the hub (start → ready); return seconds."""
    t0 = time.perf_counter()
    kernel = await hub.launch("slurm/box", ready_timeout=120)
    elapsed = time.perf_counter() - t0
    await kernel.shutdown(now=True)
    return elapsed


async def main(rounds: int) -> int:
    cluster = start_cluster()
    os.environ.update(cluster.env)
    try:
        with tempfile.TemporaryDirectory(prefix="kh-slurm-bench-") as tmp:
            table = {"python": sys.executable, "cpus": 1, "job_dir": f"{tmp}/jobs"}
            config = {"slurm": {"box": table}}
            hub_times: list[float] = []
            bare_times: list[float] = []
            async with KernelHub(config=config, plugins=[plugin], load_entrypoints=False) as hub:
                # One warm-up of each: the first import of ipykernel fills the page cache.
                await with_kernel_hub(hub)
                await bare_sbatch(Path(tmp))
                for _ in range(rounds):  # interleaved, so load changes hit both alike
                    assert not cluster.wait_queue_empty(60)  # both CPUs free before each start
                    hub_times.append(await with_kernel_hub(hub))
                    assert not cluster.wait_queue_empty(60)
                    bare_times.append(await bare_sbatch(Path(tmp)))
    finally:
        leftovers = cluster.stop()
    assert not leftovers, leftovers
    hub_med, bare_med = statistics.median(hub_times), statistics.median(bare_times)
    print(f"rounds: {rounds} (after one warm-up each)")
    print(
        f"kernel_hub slurm/box start->ready: median {hub_med:.3f} s  "
        f"(min {min(hub_times):.3f}, max {max(hub_times):.3f})"
    )
    print(
        f"bare sbatch + ipykernel:           median {bare_med:.3f} s  "
        f"(min {min(bare_times):.3f}, max {max(bare_times):.3f})"
    )
    ratio = hub_med / bare_med
    print(f"ratio: {ratio:.2f}x (target <= 1.2x): {'OK' if ratio <= 1.2 else 'OVER'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=7, help="measured rounds (>= 5)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(max(5, args.rounds))))
