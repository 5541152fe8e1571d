"""Restart → ready: kernel_hub against jupyter_client on the same ipykernel, side by side.

Three figures per round, interleaved (kernel_hub, then jupyter_client, in one process):

- ``kh restart()``: ``await kernel.restart(now=True)`` until a client made *before* the
  restart has an ``execute_reply`` from the new process;
- ``kh death``: ``kill -9`` of the kernel until that same client has a reply (the kernel's
  own watch notices, relaunches on the same ports and key; no backoff);
- ``jc restart_kernel``: jupyter_client's ``AsyncKernelManager.restart_kernel(now=True)``
  until its client, made before, has a reply.

Both start the same command (``sys.executable -m ipykernel_launcher -f {connection_file}``).
Ratios are taken per round (kernel_hub / jupyter_client), and their median is reported.

    uv run python bench/restart_bench.py            # 15 rounds
    uv run python bench/restart_bench.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


async def kh_kernel(hub):
    from kernel_hub import RestartPolicy

    # No backoff: what is measured is the relaunch itself.
    policy = RestartPolicy(limit=1000, window=60, backoff_initial=0, backoff_max=0, jitter=0)
    kernel = await hub.launch("ipykernel/python3", restart=policy)
    client = kernel.client()
    await client.__aenter__()
    await client.execute("pass", timeout=60)
    return kernel, client


async def kh_restart(kernel, client) -> float:
    t0 = time.perf_counter()
    await kernel.restart(now=True)
    await client.execute("pass", timeout=60)
    return time.perf_counter() - t0


async def kh_death(hub, kernel, client) -> float:
    restarted = asyncio.Event()

    def on(event):
        if event.kernel_id == kernel.id and event.kind == "restarted":
            restarted.set()

    unsubscribe = hub.events.subscribe(on)
    try:
        t0 = time.perf_counter()
        os.kill(kernel.manager.pid, signal.SIGKILL)
        await asyncio.wait_for(restarted.wait(), 60)
        await client.execute("pass", timeout=60)
        return time.perf_counter() - t0
    finally:
        unsubscribe()


async def jc_kernel(spec_dir: Path):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    km = AsyncKernelManager(kernel_name="bench", kernel_spec_manager=ksm)
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    await jc_execute(kc)
    return km, kc


async def jc_execute(kc) -> None:
    msg_id = kc.execute("pass")
    while True:
        reply = await kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            return


async def jc_restart(km, kc) -> float:
    t0 = time.perf_counter()
    await km.restart_kernel(now=True)
    await kc.wait_for_ready(timeout=60)  # the same client, made before the restart
    await jc_execute(kc)
    return time.perf_counter() - t0


def private_spec(root: Path) -> Path:
    kernels = root / "kernels"
    (kernels / "bench").mkdir(parents=True)
    spec = {"argv": ARGV, "display_name": "bench", "language": "python"}
    (kernels / "bench" / "kernel.json").write_text(json.dumps(spec))
    return kernels


async def main(rounds: int) -> dict:
    import kernel_hub_ipykernel.plugin

    from kernel_hub import KernelHub

    rows: dict[str, list[float]] = {"kh_restart": [], "kh_death": [], "jc_restart": []}
    with tempfile.TemporaryDirectory(prefix="kh-restart-bench-") as tmp:
        spec_dir = private_spec(Path(tmp))
        async with KernelHub(
            plugins=[kernel_hub_ipykernel.plugin], load_entrypoints=False, config={}
        ) as hub:
            kernel, client = await kh_kernel(hub)
            km, kc = await jc_kernel(spec_dir)
            try:
                for r in range(rounds):
                    rows["kh_restart"].append(await kh_restart(kernel, client))
                    rows["jc_restart"].append(await jc_restart(km, kc))
                    rows["kh_death"].append(await kh_death(hub, kernel, client))
                    print(f"round {r + 1}/{rounds}", file=sys.stderr)
            finally:
                await client.close()
                await kernel.shutdown()
                kc.stop_channels()
                await km.shutdown_kernel(now=True)
    kh_r, kh_d, jc = rows["kh_restart"], rows["kh_death"], rows["jc_restart"]
    return {
        "rounds": rounds,
        "median_s": {k: round(statistics.median(v), 4) for k, v in rows.items()},
        "ratio_restart_to_jc": round(
            statistics.median(a / b for a, b in zip(kh_r, jc, strict=True)), 3
        ),
        "ratio_death_to_jc": round(
            statistics.median(a / b for a, b in zip(kh_d, jc, strict=True)), 3
        ),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rounds)), indent=1))
