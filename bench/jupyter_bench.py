"""Benchmark of the Jupyter bridge: jupyter_client with the kernel-hub provisioner vs its own.

Two scenarios, each on the same ipykernel (``sys.executable -m ipykernel_launcher``):

1. ``start_ready``: ``AsyncKernelManager.start_kernel()`` + ``client.wait_for_ready()``,
   then ``shutdown_kernel()``; the bridged kernelspec (provisioner ``kernel-hub``,
   type ``ipykernel/python3``) vs a plain kernelspec with the same argv
   (jupyter_client's ``LocalProvisioner``). The bridge's hub is warmed up by one
   launch first; that first launch (hub creation, plugin discovery) is reported apart.
2. ``nbclient_50``: nbclient runs a 50-cell notebook (``print(i)`` per cell), kernel
   start and shutdown included, through each kernelspec.

Variants alternate round by round. Usage::

    uv run python bench/jupyter_bench.py [--rounds 20] [--nb-rounds 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def make_specs(root: Path) -> dict[str, str]:
    """Write the two kernelspecs; return variant → kernelspec name."""
    from kernel_hub_jupyter.kernelspecs import build_spec

    from kernel_hub import KernelHub

    async def python_type():
        async with KernelHub() as hub:
            return await hub.get_kernel_type("ipykernel/python3")

    kt = asyncio.run(python_type())
    kernels = root / "kernels"
    (kernels / "bench-stock").mkdir(parents=True)
    stock = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "stock",
        "language": "python",
    }
    (kernels / "bench-stock" / "kernel.json").write_text(json.dumps(stock))
    (kernels / "bench-bridge").mkdir()
    (kernels / "bench-bridge" / "kernel.json").write_text(json.dumps(build_spec(kt)))
    print(f"bridged type argv: {list(kt.argv)}")
    return {"stock": "bench-stock", "bridge": "bench-bridge"}


async def start_ready(name: str) -> tuple[float, float]:
    """Return (start→ready seconds, shutdown seconds) for one kernel of spec *name*."""
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name=name)
    t0 = time.perf_counter()
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=120)
    ready = time.perf_counter() - t0
    kc.stop_channels()
    t1 = time.perf_counter()
    await km.shutdown_kernel()
    return ready, time.perf_counter() - t1


def run_notebook(name: str, cells: int) -> float:
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(f"x = {i}\nprint(x)") for i in range(cells)])
    t0 = time.perf_counter()
    NotebookClient(nb, kernel_name=name, timeout=120, startup_timeout=120).execute()
    elapsed = time.perf_counter() - t0
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    assert last == f"{cells - 1}\n", nb.cells[-1].outputs
    return elapsed


def summary(samples: dict[str, list[float]]) -> dict[str, float]:
    out = {f"{k}_median": statistics.median(v) for k, v in samples.items()}
    out["ratio"] = out["bridge_median"] / out["stock_median"]
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--nb-rounds", type=int, default=8)
    p.add_argument("--cells", type=int, default=50)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="kh-jupyter-bench-") as tmp:
        os.environ["JUPYTER_PATH"] = tmp
        os.environ["JUPYTER_RUNTIME_DIR"] = str(Path(tmp) / "runtime")
        specs = make_specs(Path(tmp))
        cpu0 = os.times()
        t0 = time.perf_counter()
        first, _ = asyncio.run(start_ready(specs["bridge"]))
        print(f"first bridged launch in this process (hub + discovery): {first:.3f} s")
        ready: dict[str, list[float]] = {"stock": [], "bridge": []}
        stop: dict[str, list[float]] = {"stock": [], "bridge": []}
        failures = {"stock": 0, "bridge": 0}
        for i in range(args.rounds):
            order = ("stock", "bridge") if i % 2 == 0 else ("bridge", "stock")
            for variant in order:
                try:
                    r, s = asyncio.run(start_ready(specs[variant]))
                except RuntimeError as exc:  # a port taken meanwhile (jupyter_client's port race)
                    failures[variant] += 1
                    print(f"{variant}: start failed ({exc}); retried", flush=True)
                    r, s = asyncio.run(start_ready(specs[variant]))
                ready[variant].append(r)
                stop[variant].append(s)
        for name, samples in (("start_ready", ready), ("shutdown", stop)):
            r = summary(samples)
            print(
                f"{name:14} stock {r['stock_median'] * 1000:8.1f} ms   "
                f"bridge {r['bridge_median'] * 1000:8.1f} ms   ratio {r['ratio']:.3f}",
                flush=True,
            )
        nb: dict[str, list[float]] = {"stock": [], "bridge": []}
        for i in range(args.nb_rounds):
            order = ("stock", "bridge") if i % 2 == 0 else ("bridge", "stock")
            for variant in order:
                nb[variant].append(run_notebook(specs[variant], args.cells))
        wall = time.perf_counter() - t0
        cpu = os.times()
    result = {
        "first_bridged_launch_s": first,
        "start_ready": summary(ready),
        "shutdown": summary(stop),
        f"nbclient_{args.cells}": summary(nb),
        "failed_starts": failures,
        "rounds": args.rounds,
        "nb_rounds": args.nb_rounds,
        "wall_s": wall,
        "own_cpu_s": (cpu.user - cpu0.user) + (cpu.children_user - cpu0.children_user),
        "loadavg": os.getloadavg(),
    }
    for name in (f"nbclient_{args.cells}",):
        r = result[name]
        print(
            f"{name:14} stock {r['stock_median'] * 1000:8.1f} ms   "
            f"bridge {r['bridge_median'] * 1000:8.1f} ms   ratio {r['ratio']:.3f}"
        )
    print(f"load average during the run: {result['loadavg']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
