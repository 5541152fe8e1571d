"""Launch → ready from a warm pool, against a cold launch and jupyter_client, side by side.

Per round, interleaved in one process, on the same ipykernel:

- ``kh pool``: ``await hub.launch(type)`` with a pool of 1 that is full (``wait_full``
  first, not timed): the call returns a ready kernel, then a first ``execute`` round trip;
- ``kh cold``: the same launch with no pool (a request unlike the pool's), to ready;
- ``jc start``: jupyter_client's ``AsyncKernelManager.start_kernel`` + ``wait_for_ready``.

The figure the issue names is ``kh pool`` launch → ready; the round trip after it shows
the kernel is really there (a first request to a fresh ipykernel).

    uv run python bench/pool_bench.py            # 15 rounds
    uv run python bench/pool_bench.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

TYPE = "ipykernel/python3"


async def kh_rounds(rounds: int) -> dict[str, list[float]]:
    from kernel_hub import KernelHub

    out: dict[str, list[float]] = {"kh pool: launch → ready": [], "kh pool: + first execute": []}
    out["kh cold: launch → ready"] = []
    out["jc: start → ready"] = []
    async with KernelHub(config={}) as hub:
        pool = await hub.pool(TYPE, size=1, restart=False)
        for _ in range(rounds):
            await pool.wait_full(timeout=120)
            t0 = time.perf_counter()
            kernel = await hub.launch(TYPE, restart=False)
            t1 = time.perf_counter()
            async with kernel.client() as client:
                await client.execute("pass", timeout=60)
            t2 = time.perf_counter()
            out["kh pool: launch → ready"].append(t1 - t0)
            out["kh pool: + first execute"].append(t2 - t0)
            await kernel.shutdown()

            await pool.wait_full(timeout=120)  # the refill is not what the cold launch pays for
            t0 = time.perf_counter()
            cold = await hub.launch(TYPE, restart=False, env={"KH_POOL_BENCH": "cold"})
            out["kh cold: launch → ready"].append(time.perf_counter() - t0)
            await cold.shutdown()

            out["jc: start → ready"].append(await jc_start())
    return out


async def jc_start() -> float:
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(
        kernel_cmd=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    )
    t0 = time.perf_counter()
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        return time.perf_counter() - t0
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    results = asyncio.run(kh_rounds(args.rounds))
    print(f"{'figure':32} {'median':>10} {'min':>10} {'max':>10}  (ms, {args.rounds} rounds)")
    for name, values in results.items():
        ms = [v * 1e3 for v in values]
        print(f"{name:32} {statistics.median(ms):10.2f} {min(ms):10.2f} {max(ms):10.2f}")
    jc = statistics.median(results["jc: start → ready"])
    pooled = statistics.median(results["kh pool: launch → ready"])
    print(f"pool / jupyter_client: {pooled / jc:.4f}×; target: pool launch → ready ≤ 5 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
