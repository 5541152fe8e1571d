"""One hub, many kernels: what each kernel costs the host, and whether anything grows with N.

One hub holds N fake kernels (``kernel_hub.testing``'s ``fake/echo``: a real local process
that speaks the protocol but runs no code, a few MB each), for each N in a fresh Python
process, and reports:

- **host RSS per kernel**: (``VmRSS`` with N kernels − ``VmRSS`` with one kernel launched and
  shut down, so the imports, the ZeroMQ context and the reaper are in the baseline) ÷ N;
- **fds per kernel**, all of them and those beyond the TCP connections to the kernel's own
  ports (ZeroMQ's signalling eventfds, pidfds, pipes, files), from ``/proc/self/fd`` and
  ``/proc/net/tcp``;
- **host threads** (``Threads`` in ``/proc/self/status``);
- **event latency**: ``kill -9`` of a kernel until the hub's ``died`` event reaches a subscriber;
  **restart latency**: until ``restarted`` (a new fake kernel answered; no backoff);
- **execute round trip** on one kernel while the N others are idle;
- ``hub.get(id)`` and ``list(hub.kernels.values())`` (µs; the list divided by N too);
- ``shutdown_all``: wall time, and how many kernels ended politely or were killed;
- the fake kernel's own RSS and PSS (a sample of 10 kernels, median).

Timings are medians of a few samples on a machine that may be busy: read the ratios
between sizes (flat or not), not the absolute numbers. Nothing is asserted here;
``tests/test_scale.py`` checks behaviour (counts, log lines, leftovers).

    uv run python bench/scale_bench.py                 # N = 10, 100, 1000 (~5 min on 2 cores)
    uv run python bench/scale_bench.py --quick         # N = 10, 50
    uv run python bench/scale_bench.py --sizes 10,200 --json out.json

Nothing is left behind: every kernel runs with a private ``JUPYTER_RUNTIME_DIR``, and each
size ends by looking for processes that carry it and files left in it (reported, killed).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Kernels launched at once while filling the hub.
LAUNCH_AT_ONCE = 16
#: Kernels that get a restart policy without backoff, for the latency samples.
PROBES = 3


def status(field: str) -> int:
    """Return a numeric field of ``/proc/self/status`` (kB for memory)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def smaps(pid: int) -> dict[str, int]:
    """Return ``Rss`` and ``Pss`` (kB) of process *pid*."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("Rss", "Pss", "Pss_Anon"):
                out[key] = int(line.split()[1])
    return out


def tcp_inodes(ports: set[int]) -> set[str]:
    """Return the inodes of this machine's TCP sockets connected to one of *ports*."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if remote_port in ports:
                inodes.add(cols[9])
    return inodes


def fd_kinds(kernel_ports: set[int]) -> dict[str, int]:
    """Count this process's fds: TCP to the kernels' ports, eventfd, pidfd, other."""
    to_kernels = tcp_inodes(kernel_ports)
    kinds = {"total": 0, "tcp_to_kernels": 0, "eventfd": 0, "pidfd": 0, "other": 0}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        kinds["total"] += 1
        if target.startswith("socket:[") and target[8:-1] in to_kernels:
            kinds["tcp_to_kernels"] += 1
        elif "eventfd" in target:
            kinds["eventfd"] += 1
        elif "pidfd" in target:
            kinds["pidfd"] += 1
        else:
            kinds["other"] += 1
    return kinds


def median_us(fn, rounds: int = 2000) -> float:
    """Return the median time of *fn* in µs (blocks of 100 calls)."""
    samples = []
    for _ in range(max(1, rounds // 100)):
        t0 = time.perf_counter()
        for _ in range(100):
            fn()
        samples.append((time.perf_counter() - t0) / 100 * 1e6)
    return statistics.median(samples)


async def fill(hub, n: int, *, restart_policy) -> list:
    """Launch *n* fake kernels, :data:`LAUNCH_AT_ONCE` at a time; the first PROBES restartable."""
    from kernel_hub.testing import FAKE_TYPE

    gate = asyncio.Semaphore(LAUNCH_AT_ONCE)

    async def one(i: int):
        async with gate:
            policy = restart_policy if i < PROBES else False
            return await hub.launch(FAKE_TYPE, restart=policy, ready_timeout=120)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def death_latency(hub, kernel) -> tuple[float, float]:
    """``kill -9`` *kernel*; return seconds until ``died`` and until ``restarted`` arrive."""
    died, restarted = asyncio.Event(), asyncio.Event()
    times: dict[str, float] = {}

    def on(event) -> None:
        if event.kernel_id != kernel.id:
            return
        if event.kind == "died":
            times["died"] = time.perf_counter()
            died.set()
        elif event.kind == "restarted":
            times["restarted"] = time.perf_counter()
            restarted.set()

    unsubscribe = hub.events.subscribe(on)
    try:
        t0 = time.perf_counter()
        os.kill(kernel.manager.pid, signal.SIGKILL)
        await asyncio.wait_for(restarted.wait(), 120)
        return times["died"] - t0, times["restarted"] - t0
    finally:
        unsubscribe()


async def measure(n: int, rounds: int) -> dict:
    """Run one size in this process and return its figures."""
    from kernel_hub import KernelHub, RestartPolicy
    from kernel_hub.testing import FAKE_TYPE, fake_kernel_plugin

    policy = RestartPolicy(limit=10_000, window=60, backoff_initial=0, backoff_max=0, jitter=0)
    out: dict = {"n": n}
    async with KernelHub(plugins=[fake_kernel_plugin()], load_entrypoints=False, config={}) as hub:
        # Baseline: one kernel launched, used and shut down (imports, ZeroMQ context, reaper).
        warm = await hub.launch(FAKE_TYPE)
        async with warm.client() as client:
            await client.execute("pass", timeout=60)
        await warm.shutdown()
        gc.collect()
        base_rss, base_threads = status("VmRSS"), status("Threads")
        base_fds = fd_kinds(set())

        t0 = time.perf_counter()
        kernels = await fill(hub, n, restart_policy=policy)
        out["launch_s"] = time.perf_counter() - t0
        await asyncio.sleep(0.5)  # the last kernels' first status messages
        gc.collect()
        ports = {k.connection_info[f"{c}_port"] for k in kernels for c in ("iopub", "shell")}
        ports |= {k.connection_info[f"{c}_port"] for k in kernels for c in ("control", "stdin")}
        fds = fd_kinds(ports)
        out["rss_per_kernel_kib"] = (status("VmRSS") - base_rss) / n
        out["fds_per_kernel"] = (fds["total"] - base_fds["total"]) / n
        out["fds_beyond_sockets_per_kernel"] = (
            fds["total"] - fds["tcp_to_kernels"] - base_fds["total"]
        ) / n
        out["fds"] = {k: fds[k] - base_fds.get(k, 0) for k in fds}
        out["threads"] = status("Threads")
        out["threads_base"] = base_threads
        from kernel_hub.managers.reaper import reaper

        reaper_pid = reaper().pid
        out["reaper_rss_kib"] = smaps(reaper_pid)["Rss"] if reaper_pid else 0
        sample = [smaps(k.manager.pid) for k in kernels[:10]]
        out["fake_kernel_rss_kib"] = statistics.median(s["Rss"] for s in sample)
        out["fake_kernel_pss_kib"] = statistics.median(s["Pss"] for s in sample)

        # The registry.
        ids = [k.id for k in kernels]
        out["get_us"] = median_us(lambda: hub.get(ids[len(ids) // 2]))
        out["list_us"] = median_us(lambda: list(hub.kernels.values()), rounds=200)
        out["list_us_per_kernel"] = out["list_us"] / n

        # Latencies with N kernels around.
        probe = kernels[-1]
        async with probe.client() as client:
            await client.execute("pass", timeout=60)
            rtts = []
            for _ in range(200):
                t1 = time.perf_counter()
                await client.execute("pass", timeout=60)
                rtts.append((time.perf_counter() - t1) * 1e3)
        out["execute_ms"] = statistics.median(rtts)
        died, restarted = [], []
        for r in range(rounds):
            d, s = await death_latency(hub, kernels[r % PROBES])
            died.append(d * 1e3)
            restarted.append(s * 1e3)
        out["died_event_ms"] = statistics.median(died)
        out["restarted_event_ms"] = statistics.median(restarted)

        t0 = time.perf_counter()
        report = await hub.shutdown_all()
        out["shutdown_all_s"] = time.perf_counter() - t0
        out["shutdown_politely"], out["shutdown_killed"] = report.politely, report.killed
        out["shutdown_failed"] = report.failed
    return out


def leftovers(runtime: Path) -> dict:
    """Processes carrying our runtime dir (killed) and files left in it."""
    marker = f"JUPYTER_RUNTIME_DIR={runtime}".encode()
    procs = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    procs.append(int(name))
        except OSError:
            continue
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    files = sorted(p.name for p in runtime.iterdir()) if runtime.exists() else []
    return {"processes": procs, "files": files}


def run_size(n: int, rounds: int) -> dict:
    """Measure size *n* in a fresh interpreter with a private runtime dir."""
    with tempfile.TemporaryDirectory(prefix="kh-scale-") as tmp:
        runtime = Path(tmp) / "runtime"
        runtime.mkdir(mode=0o700)
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--rounds", str(rounds)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        # The child's reaper exits with it; give it a moment before looking.
        time.sleep(0.5)
        left = leftovers(runtime)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"size {n} failed (exit {proc.returncode})")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["leftovers"] = left
        result["log"] = [line for line in proc.stderr.splitlines() if line.strip()]
        return result


ROWS = [
    ("host RSS per kernel", "KiB", "rss_per_kernel_kib", "≤ 307"),
    ("host fds per kernel (all)", "", "fds_per_kernel", ""),
    ("host fds per kernel beyond TCP to its ports", "", "fds_beyond_sockets_per_kernel", "≤ 10"),
    ("host threads (baseline: one kernel)", "", "threads", "constant"),
    ("`hub.get(id)`", "µs", "get_us", "flat"),
    ("`list(hub.kernels.values())` per kernel", "µs", "list_us_per_kernel", "flat"),
    ("`execute('pass')` on one kernel, N idle", "ms", "execute_ms", "flat"),
    ("`kill -9` → `died` event", "ms", "died_event_ms", "flat"),
    ("`kill -9` → `restarted` (new fake kernel ready)", "ms", "restarted_event_ms", "flat"),
    ("launch N, 16 at a time", "s", "launch_s", ""),
    ("`shutdown_all`", "s", "shutdown_all_s", "≤ 10 (N=1000)"),
    ("`shutdown_all`: ended politely / killed", "", "shutdown", "all polite"),
    ("the reaper helper's RSS (one process per host)", "MiB", "reaper", ""),
    ("fake kernel RSS / PSS (median of 10)", "MiB", "fake", ""),
]


def table(results: list[dict]) -> str:
    head = "| metric | unit | " + " | ".join(f"N={r['n']}" for r in results) + " | target |"
    lines = [head, "|---|---|" + "--:|" * len(results) + "---|"]
    for label, unit, key, target in ROWS:
        cells = []
        for r in results:
            if key == "shutdown":
                cells.append(f"{r['shutdown_politely']} / {r['shutdown_killed']}")
            elif key == "fake":
                rss, pss = r["fake_kernel_rss_kib"] / 1024, r["fake_kernel_pss_kib"] / 1024
                cells.append(f"{rss:.1f} / {pss:.1f}")
            elif key == "reaper":
                cells.append(f"{r['reaper_rss_kib'] / 1024:.1f}")
            elif key == "threads":
                cells.append(f"{r['threads']} ({r['threads_base']})")
            else:
                v = r[key]
                cells.append(f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}")
        lines.append(f"| {label} | {unit} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 10, 50")
    parser.add_argument("--sizes", help="comma-separated N (default 10,100,1000)")
    parser.add_argument("--rounds", type=int, default=6, help="kill -9 samples per size")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one size
    args = parser.parse_args()
    if args.one:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        print(json.dumps(asyncio.run(measure(args.one, args.rounds))))
        return 0
    sizes = [10, 50] if args.quick else [10, 100, 1000]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    rounds = 2 if args.quick else args.rounds
    results = []
    for n in sizes:
        t0 = time.monotonic()
        results.append(run_size(n, rounds))
        print(f"N={n}: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    print(table(results))
    bad = [(r["n"], r["leftovers"]) for r in results if any(r["leftovers"].values())]
    for r in results:
        for line in r["log"]:
            print(f"N={r['n']} log: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    if bad:
        print(f"LEFT BEHIND (killed): {bad}")
        return 1
    print("nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
