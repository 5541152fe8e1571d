"""CurveZMQ on vs off: what transport encryption costs kernel_hub's client (issue 24).

Two kernels of the same type (``ipykernel/python3``, ipykernel 7.4), one launched
with ``transport_encryption="disabled"`` (plain), one with ``"auto"`` (Curve), each
with one connected client, in one process. Interleaved, in an order rotated every
round:

- ``execute('pass')`` round trips (reply and IOPub idle): latency, and the **client
  CPU per round trip** = ``time.process_time()`` delta around a block of 50 ÷ 50
  (every thread of this process: ZeroMQ's I/O thread, which does the Curve
  crypto, counts), median over blocks; the kernel's CPU per round trip likewise
  (all its threads, from ``/proc/<pid>/task/*/schedstat``);
- an **IOPub flood**: the kernel prints 20000 lines; client CPU, wall time and
  kernel CPU until the reply, and every line must arrive.

Ratios are Curve / plain per round, and their median is reported (target ≤ 1.15×), next
to the ratio of the two medians; the samples are in the JSON too.

    uv run python bench/curve_bench.py            # 20 blocks of 50, 5 floods
    uv run python bench/curve_bench.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import statistics
import sys
import time

BLOCK = 50


def kernel_cpu(pid: int) -> float:
    """Return the CPU seconds of every thread of *pid* so far (schedstat's first field)."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total / 1e9


async def settle() -> None:
    """Let work the client defers past the reply run, so that its CPU counts in the block."""
    await asyncio.sleep(0.05)


async def block(client, pid: int) -> tuple[float, float, float]:
    """Return (client CPU µs, kernel CPU µs, median latency ms) per round trip over one block."""
    lat = []
    k0, c0 = kernel_cpu(pid), time.process_time()
    for _ in range(BLOCK):
        t = time.perf_counter()
        await client.execute("pass", timeout=60)
        lat.append(time.perf_counter() - t)
    await settle()
    c1, k1 = time.process_time(), kernel_cpu(pid)
    return (c1 - c0) / BLOCK * 1e6, (k1 - k0) / BLOCK * 1e6, statistics.median(lat) * 1e3


async def flood(client, pid: int, lines: int) -> tuple[float, float, float]:
    """Return (client CPU ms, kernel CPU ms, wall ms) of printing *lines* lines; check them."""
    texts: list[str] = []

    def hook(msg) -> None:
        if msg.header["msg_type"] == "stream":
            texts.append(msg.content["text"])

    code = f"for i in range({lines}): print(i, flush=True)"
    k0, c0, t0 = kernel_cpu(pid), time.process_time(), time.perf_counter()
    await client.execute(code, output_hook=hook, timeout=600)
    wall = time.perf_counter() - t0
    await settle()
    c1, k1 = time.process_time(), kernel_cpu(pid)
    got = "".join(texts).split()
    if got != [str(i) for i in range(lines)]:
        raise AssertionError(f"the flood lost lines: {len(got)} of {lines}")
    return (c1 - c0) * 1e3, (k1 - k0) * 1e3, wall * 1e3


async def main(blocks: int, floods: int, lines: int) -> dict:
    import kernel_hub_ipykernel.plugin

    from kernel_hub import KernelHub

    rows: dict[str, dict[str, list[float]]] = {
        v: {
            "client_us": [],
            "kernel_us": [],
            "latency_ms": [],
            "flood_client_ms": [],
            "flood_kernel_ms": [],
            "flood_wall_ms": [],
        }
        for v in ("plain", "curve")
    }
    async with KernelHub(
        plugins=[kernel_hub_ipykernel.plugin], load_entrypoints=False, config={}
    ) as hub:
        kernels, clients = {}, {}
        for variant, policy in (("plain", "disabled"), ("curve", "auto")):
            kernel = await hub.launch("ipykernel/python3", transport_encryption=policy)
            if ("curve_publickey" in kernel.connection_info) != (variant == "curve"):
                raise AssertionError(f"the {variant} kernel is not {variant}")
            client = kernel.client()
            await client.__aenter__()
            for _ in range(BLOCK):  # warm-up
                await client.execute("pass", timeout=60)
            kernels[variant], clients[variant] = kernel, client
        try:
            order = ["plain", "curve"]
            for r in range(blocks):
                for variant in order if r % 2 == 0 else order[::-1]:
                    c, k, lat = await block(clients[variant], kernels[variant].manager.pid)
                    rows[variant]["client_us"].append(c)
                    rows[variant]["kernel_us"].append(k)
                    rows[variant]["latency_ms"].append(lat)
                print(f"block {r + 1}/{blocks}", file=sys.stderr)
            for r in range(floods):
                for variant in order if r % 2 == 0 else order[::-1]:
                    c, k, w = await flood(clients[variant], kernels[variant].manager.pid, lines)
                    rows[variant]["flood_client_ms"].append(c)
                    rows[variant]["flood_kernel_ms"].append(k)
                    rows[variant]["flood_wall_ms"].append(w)
                print(f"flood {r + 1}/{floods}", file=sys.stderr)
        finally:
            for variant in clients:
                await clients[variant].close()
                await kernels[variant].shutdown()
    plain, curve = rows["plain"], rows["curve"]
    return {
        "block": BLOCK,
        "blocks": blocks,
        "floods": floods,
        "flood_lines": lines,
        "median": {
            v: {k: round(statistics.median(x), 2) for k, x in r.items()} for v, r in rows.items()
        },
        "ratio_of_medians": {
            k: round(statistics.median(curve[k]) / statistics.median(plain[k]), 3) for k in plain
        },
        "ratio_curve_to_plain": {
            k: round(statistics.median(a / b for a, b in zip(curve[k], plain[k], strict=True)), 3)
            for k in plain
        },
        "samples": {
            v: {k: [round(x, 2) for x in xs] for k, xs in r.items()} for v, r in rows.items()
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 blocks, 1 flood of 2000 lines")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--floods", type=int, default=5)
    parser.add_argument("--lines", type=int, default=20000)
    args = parser.parse_args()
    if args.quick:
        args.blocks, args.floods, args.lines = 2, 1, 2000
    print(json.dumps(asyncio.run(main(args.blocks, args.floods, args.lines)), indent=1))
