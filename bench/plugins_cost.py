"""What installed plugins cost when they have nothing to do: ``kernel-hub list`` and a host.

Two variants, each a fresh interpreter per sample, interleaved:

``all``
    every plugin of the workspace installed and enabled (spec, ipykernel, ssh,
    docker, and the tutorial's nice), with an empty config file: no SSH table,
    no Docker table (a local Docker engine, if one runs, is still asked for
    labelled images);
``core``
    the same with ``KERNEL_HUB_DISABLE_PLUGINS=ssh,docker``: the core and the
    local providers only.

Measured per sample: ``kernel-hub list`` wall time and peak RSS (the child's
``ru_maxrss`` from ``wait4``), and a host's RSS (``VmRSS``) after ``import
kernel_hub`` and one ``await hub.find_kernel_types()``. Targets: ``all`` within
1.2x of ``core`` on each. Prints a Markdown table and writes JSON.

.. code-block:: sh

    uv run python bench/plugins_cost.py            # 15 samples per variant
    uv run python bench/plugins_cost.py --quick    # 2 samples, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"all": "", "core": "ssh,docker"}
TARGET = 1.2
HEAVY = ("asyncssh", "cryptography", "docker", "requests", "urllib3")

HOST = f"""
import asyncio, json, sys
from kernel_hub import KernelHub
types = asyncio.run(KernelHub().find_kernel_types())
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({{
    "rss_kb": int(status["VmRSS"].split()[0]),
    "types": len(types),
    "heavy": [m for m in {HEAVY!r} if m in sys.modules],
}}))
"""


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Run *argv*; return (wall seconds, peak RSS in kB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited with {proc.returncode}")
    return wall, usage.ru_maxrss, out.decode()


def sample(variant: str, config: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "KERNEL_HUB_DISABLE_PLUGINS"}
    env["KERNEL_HUB_CONFIG"] = config
    if VARIANTS[variant]:
        env["KERNEL_HUB_DISABLE_PLUGINS"] = VARIANTS[variant]
    wall, peak, listing = run_child([sys.executable, "-m", "kernel_hub", "list"], env)
    _, _, host_out = run_child([sys.executable, "-c", HOST], env)
    host = json.loads(host_out)
    return {
        "list_s": wall,
        "list_peak_mb": peak / 1024,
        "host_rss_mb": host["rss_kb"] / 1024,
        "types": host["types"],
        "listed_lines": len(listing.splitlines()),
        "heavy": host["heavy"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 samples per variant")
    parser.add_argument("-n", type=int, default=15, help="samples per variant")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    n = 2 if args.quick else args.n
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "kernel-hub.toml"
        config.write_text("")
        sample("all", str(config))  # warm the file cache once; not counted
        samples: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        order = list(VARIANTS)
        for i in range(n):
            for variant in order[i % 2 :] + order[: i % 2]:  # alternate who goes first
                samples[variant].append(sample(variant, str(config)))
    result: dict[str, object] = {"samples": n, "variants": {}}
    rows = []
    for metric, unit in (("list_s", "s"), ("list_peak_mb", "MB"), ("host_rss_mb", "MB")):
        med = {v: statistics.median(s[metric] for s in samples[v]) for v in VARIANTS}
        ratio = med["all"] / med["core"]
        result["variants"][metric] = {**med, "ratio": ratio}  # type: ignore[index]
        ok = "ok" if ratio <= TARGET else "MISSED"
        numbers = f"{med['core']:.3g} | {med['all']:.3g} | {ratio:.2f}"
        rows.append(f"| {metric} | {unit} | {numbers} | ≤{TARGET}× | {ok} |")
    result["heavy_imported"] = sorted({m for s in samples["all"] for m in s["heavy"]})  # type: ignore[misc]
    result["types"] = {v: samples[v][0]["types"] for v in VARIANTS}
    print(
        f"{n} samples per variant; kernel types: {result['types']}; "
        f"heavy modules imported with all plugins: {result['heavy_imported'] or 'none'}"
    )
    print("| metric | unit | core | all plugins | all/core | target | |")
    print("|---|---|--:|--:|--:|--:|:-:|")
    print("\n".join(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
