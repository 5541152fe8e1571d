"""Launch → ready from a warm pool, against a cold launch and jupyter_client, side by side.

Per round, interleaved in one process, on the same ipykernel:

- ``kh pool``: ``await hub.launch(type)`` with a pool of 1 that is full (``wait_full``
  first, not timed): the call returns a ready kernel, then a first ``execute`` round trip;
- ``kh cold``: the same launch with no pool (other params: never served by a pool), to ready;
- ``kh pool adapted``: ``await hub.launch(type, kernel_id=..., cwd=..., env=...)`` with a
  notebook's cwd and ``JPY_SESSION_NAME``, served by the same pool's spare after the
  silent adaptation (chdir, env, ``__session__``): what the adaptation costs;
- ``jc start``: jupyter_client's ``AsyncKernelManager.start_kernel`` + ``wait_for_ready``.

Then the Jupyter bridge (``--bridge``, on by default): jupyter_client's
``AsyncKernelManager(kernel_name=<bridged kernelspec>)`` ``start_kernel`` +
``client.wait_for_ready``, with the bridge's pool of 1 full (``[pool."ipykernel/python3"]
size = 1`` in a temp ``KERNEL_HUB_CONFIG``; each launch has a cwd and a ``JPY_SESSION_NAME``,
as jupyter_server gives a notebook's kernel) vs with no pool (the pool resized to 0).

The figure the issue names is ``kh pool`` launch → ready; the round trip after it shows
the kernel is really there (a first request to a fresh ipykernel).

``--cli``: the command line instead, in pairs: ``kernel-hub run ipykernel/python3 -c pass``
wall time (process start to exit) served by a ``kernel-hub pool`` of 1, against the same
command with no pool serving (a state dir root with no pool socket: ``run`` stats one file
and launches, as before pools). Each pair runs in alternating order; before each warm run
the pool's refill is awaited (not timed).

    uv run python bench/pool_bench.py            # 15 rounds
    uv run python bench/pool_bench.py --rounds 5 --no-bridge
    uv run python bench/pool_bench.py --rounds 5
    uv run python bench/pool_bench.py --cli --rounds 9
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TYPE = "ipykernel/python3"


async def kh_rounds(rounds: int) -> dict[str, list[float]]:
    from kernel_hub import KernelHub

    out: dict[str, list[float]] = {"kh pool: launch → ready": [], "kh pool: + first execute": []}
    out["kh pool adapted: launch → ready"] = []
    out["kh cold: launch → ready"] = []
    out["jc: start → ready"] = []
    where = tempfile.mkdtemp(prefix="kh-pool-bench-")
    env = {"JPY_SESSION_NAME": os.path.join(where, "bench.ipynb")}
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

            await pool.wait_full(timeout=120)
            t0 = time.perf_counter()
            adapted = await hub.launch(
                TYPE, kernel_id=f"nb-{time.monotonic_ns()}", cwd=where, env=env, restart=False
            )
            out["kh pool adapted: launch → ready"].append(time.perf_counter() - t0)
            assert pool.adapted >= 1 and adapted.request.cwd == where
            await adapted.shutdown()

            await pool.wait_full(timeout=120)  # the refill is not what the cold launch pays for
            t0 = time.perf_counter()
            # Other params: never served from the pool (another env would be adapted).
            cold = await hub.launch(TYPE, restart=False, params={"kh_pool_bench": "cold"})
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


def bridged_spec(root: Path) -> str:
    """Write the bridge's kernelspec of ``ipykernel/python3`` under *root*; return its name."""
    from kernel_hub_jupyter.kernelspecs import build_spec

    from kernel_hub import KernelHub

    async def python_type():
        async with KernelHub(config={}) as hub:
            return await hub.get_kernel_type(TYPE)

    spec = root / "kernels" / "bench-pool-bridge"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps(build_spec(asyncio.run(python_type()))))
    return spec.name


async def bridge_start(name: str, where: str) -> float:
    """Return start_kernel → wait_for_ready seconds of one bridged kernel (then shut it down)."""
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name=name)
    env = {**os.environ, "JPY_SESSION_NAME": os.path.join(where, "bench.ipynb")}
    t0 = time.perf_counter()
    await km.start_kernel(cwd=where, env=env)
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        return time.perf_counter() - t0
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


async def bridge_rounds(rounds: int, name: str) -> dict[str, list[float]]:
    from kernel_hub_jupyter import bridge

    out: dict[str, list[float]] = {
        "bridge pool: start → ready": [],
        "bridge cold: start → ready": [],
    }
    where = tempfile.mkdtemp(prefix="kh-pool-bench-nb-")
    (pool,) = await bridge.start_pools()

    async def resize(size: int):
        hub = await bridge.get_hub()
        fresh = await bridge.call(hub.pool(TYPE, size=size))
        if size:
            await bridge.call(fresh.wait_full(timeout=120))
        return fresh

    await bridge.call(pool.wait_full(timeout=120))
    await bridge_start(name, where)  # the first launch through jupyter_client: not timed
    for _ in range(rounds):
        pool = await resize(1)
        handed = pool.handed_out
        out["bridge pool: start → ready"].append(await bridge_start(name, where))
        assert pool.handed_out == handed + 1, "the bridged launch was not served by the pool"
        await resize(0)  # no pool: the launch is cold, and no refill competes with it
        out["bridge cold: start → ready"].append(await bridge_start(name, where))


CLI = [sys.executable, "-m", "kernel_hub"]
READY = re.compile(r"spare \w+ ready")


class _Log:
    """The pool's stderr, read without a buffer in which a line could wait unseen."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Read until a spare is ready (a line not seen by an earlier call)."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while not READY.search(self.text):
                if not sel.select(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("no spare got ready")
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise RuntimeError("the pool ended")
                self.text += chunk.decode()
        self.text = READY.split(self.text, maxsplit=1)[1]


def _timed_run(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(
        [*CLI, "run", TYPE, "-c", "pass"], env=env, capture_output=True, text=True, timeout=120
    )
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"kernel-hub run failed: {res.stderr}")
    return took


def cli_rounds(rounds: int) -> dict[str, list[float]]:
    """``kernel-hub run -c pass`` with a warm pool and without, in pairs."""
    out: dict[str, list[float]] = {"cli run, warm pool": [], "cli run, no pool": []}
    with tempfile.TemporaryDirectory() as root:
        warm = {**os.environ, "KERNEL_HUB_STATE_DIR": os.path.join(root, "pool")}
        cold = {**os.environ, "KERNEL_HUB_STATE_DIR": os.path.join(root, "none")}
        pool = subprocess.Popen(
            [*CLI, "pool", TYPE, "--size", "1"],
            env=warm,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert pool.stderr is not None
            log = _Log(pool.stderr.fileno())
            _timed_run(cold)  # warm the file cache for both
            for i in range(rounds):
                log.wait_ready()  # the refill is not what the warm run pays for
                pair = [("cli run, warm pool", warm), ("cli run, no pool", cold)]
                for name, env in pair if i % 2 == 0 else pair[::-1]:
                    out[name].append(_timed_run(env))
        finally:
            pool.send_signal(signal.SIGTERM)
            pool.wait(60)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--bridge", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--cli", action="store_true", help="kernel-hub run with and without pool")
    args = parser.parse_args(argv)
    if args.cli:
        timings = cli_rounds(args.rounds)
        print(f"{'figure':24} {'median':>10} {'min':>10} {'max':>10}  (ms, {args.rounds} pairs)")
        for name, values in timings.items():
            ms = [v * 1e3 for v in values]
            print(f"{name:24} {statistics.median(ms):10.1f} {min(ms):10.1f} {max(ms):10.1f}")
        pairs = zip(timings["cli run, warm pool"], timings["cli run, no pool"], strict=True)
        ratios = [w / c for w, c in pairs]
        print(f"warm / no pool, per pair: median {statistics.median(ratios):.3f}×")
        return 0
    results = asyncio.run(kh_rounds(args.rounds))
    if args.bridge:
        with tempfile.TemporaryDirectory(prefix="kh-pool-bench-") as tmp:
            config = Path(tmp) / "config.toml"
            config.write_text(f'[pool."{TYPE}"]\nsize = 1\n')
            os.environ["KERNEL_HUB_CONFIG"] = str(config)  # read when the bridge's hub is made
            os.environ["JUPYTER_PATH"] = tmp
            name = bridged_spec(Path(tmp))
            results.update(asyncio.run(bridge_rounds(args.rounds, name)))
    print(f"{'figure':32} {'median':>10} {'min':>10} {'max':>10}  (ms, {args.rounds} rounds)")
    for name, values in results.items():
        ms = [v * 1e3 for v in values]
        print(f"{name:32} {statistics.median(ms):10.2f} {min(ms):10.2f} {max(ms):10.2f}")
    jc = statistics.median(results["jc: start → ready"])
    pooled = statistics.median(results["kh pool: launch → ready"])
    print(f"pool / jupyter_client: {pooled / jc:.4f}×; target: pool launch → ready ≤ 5 ms")
    adapted = statistics.median(results["kh pool adapted: launch → ready"])
    print(f"the adaptation costs {(adapted - pooled) * 1e3:.2f} ms (median)")
    if args.bridge:
        warm = statistics.median(results["bridge pool: start → ready"])
        cold = statistics.median(results["bridge cold: start → ready"])
        print(f"bridge: pool / cold: {warm / cold:.3f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
