"""Profile kernel_hub's client hot paths: execute('pass') round trips and an IOPub flood.

Run from the repository root::

    uv run python bench/profile_hotpaths.py [--n 2000] [--lines 20000] [--variant kernel_hub]

It starts one kernel with the benchmark's variant class, warms up, then runs
the two loops under :mod:`cProfile` with a CPU-time clock (so time blocked in
``epoll`` does not count) and prints the top functions by own time (tottime)
with their share of the profiled CPU. cProfile inflates the cost
of many small calls; read the shares, not the absolute times, and confirm a
fix with ``bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import bench


def top(prof: cProfile.Profile, n: int) -> str:
    st = pstats.Stats(prof)
    total = st.total_tt
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = io.StringIO()
    out.write(f"  total profiled CPU {total * 1e3:.0f} ms\n")
    out.write(f"  {'own%':>6} {'cum%':>6} {'calls':>9}  function\n")
    for (path, line, func), (_cc, nc, tt, ct, _callers) in rows:
        where = f"{Path(path).name}:{line}" if line else path
        out.write(f"  {tt / total:6.1%} {ct / total:6.1%} {nc:9d}  {func} ({where})\n")
    return out.getvalue()


def ours(prof: cProfile.Profile, n: int) -> str:
    """Return kernel_hub's own functions by cumulative time: where its extra CPU goes."""
    st = pstats.Stats(prof)
    total = st.total_tt
    rows = [kv for kv in st.stats.items() if f"{os.sep}kernel_hub{os.sep}" in kv[0][0]]
    rows.sort(key=lambda kv: kv[1][3], reverse=True)
    out = io.StringIO()
    out.write(f"  {'own%':>6} {'cum%':>6} {'calls':>9}  kernel_hub function\n")
    for (path, line, func), (_cc, nc, tt, ct, _callers) in rows[:n]:
        where = f"{Path(path).parent.name}/{Path(path).name}:{line}"
        out.write(f"  {tt / total:6.1%} {ct / total:6.1%} {nc:9d}  {func} ({where})\n")
    return out.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="kernel_hub", choices=bench.VARIANTS)
    ap.add_argument("--n", type=int, default=2000, help="execute('pass') round trips")
    ap.add_argument("--lines", type=int, default=20_000, help="lines printed in the flood")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kh-prof-"))
    (workdir / "runtime").mkdir(mode=0o700)
    os.environ["JUPYTER_RUNTIME_DIR"] = str(workdir / "runtime")
    os.environ["IPYTHONDIR"] = str(workdir / "ipython")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    v = bench.VARIANT_CLASSES[args.variant](loop, workdir)
    try:
        h, _, _ = v.start()
        s = v.connect(h)
        v.resume(s)
        v.exec_block(s, 200)

        prof = cProfile.Profile(time.process_time)
        prof.enable()
        _, cpu, wall = v.exec_block(s, args.n)
        prof.disable()
        print(f"== {args.variant}: {args.n} × execute('pass') under cProfile")
        print(f"  {cpu / args.n * 1e6:.0f} µs CPU per round trip (profiled), wall {wall:.2f} s")
        print(top(prof, args.top))
        if args.variant == "kernel_hub":
            print(ours(prof, args.top))

        code = bench.FLOOD_CODE.format(n=args.lines)
        prof = cProfile.Profile(time.process_time)
        prof.enable()
        wall, cpu, texts, nmsg = v.flood(s, code)
        prof.disable()
        lines = len("".join(texts).splitlines())
        print(f"== {args.variant}: IOPub flood of {args.lines} lines under cProfile")
        print(
            f"  {lines} lines in {nmsg} messages, CPU {cpu * 1e3:.0f} ms, wall {wall * 1e3:.0f} ms"
        )
        print(top(prof, args.top))
        if args.variant == "kernel_hub":
            print(ours(prof, args.top))

        v.disconnect(s)
        v.stop(h)
    finally:
        v.abort()
        loop.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
