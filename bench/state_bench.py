"""Kernels that outlive their host (issue 23): re-adoption and ``kernel-hub ps``, timed.

Two figures:

- ``adopt 8``: a host process launches 8 ipykernels into a state dir and is
  killed with SIGKILL; a new ``KernelHub(state_dir=...)`` in this process times
  ``await hub.adopt()`` until all 8 are watched again (the first round), then
  ``hub.detach()`` and a fresh hub's ``adopt()`` again (the later rounds).
  Budget: 1 s for all 8.
- ``ps 50``: ``kernel-hub ps`` and ``kernel-hub ps --json`` as a person runs them
  (a new Python process each time, imports included) over 50 recorded kernels
  (records written as a hub writes them, owners gone). Budget: 0.3 s.

    uv run python bench/state_bench.py              # 5 rounds
    uv run python bench/state_bench.py --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

HOST = textwrap.dedent(
    """
    import asyncio, json, sys
    from kernel_hub import KernelHub

    async def main():
        hub = KernelHub(state_dir=sys.argv[1], grace=120, config={})
        await hub.adopt()
        kernels = await asyncio.gather(
            *(hub.launch("ipykernel/python3", restart=False) for _ in range(int(sys.argv[2])))
        )
        print(json.dumps([k.id for k in kernels]), flush=True)
        sys.stdin.readline()

    asyncio.run(main())
    """
)


async def adopt_rounds(state_dir: Path, rounds: int, count: int) -> list[float]:
    from kernel_hub import KernelHub

    times = []
    hub = None
    for _ in range(rounds):
        hub = KernelHub(state_dir=state_dir, config={})
        t0 = time.perf_counter()
        adopted = await hub.adopt()
        times.append(time.perf_counter() - t0)
        assert len(adopted) == count, f"adopted {len(adopted)} of {count}"
        await hub.detach()
    if hub is not None:  # the last round's kernels: adopted once more, then shut down
        final = KernelHub(state_dir=state_dir, config={})
        async with final:
            pass
    return times


def bench_adopt(rounds: int, count: int = 8) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="kh-state-bench-") as tmp:
        state_dir = Path(tmp) / "hubs" / "bench"
        env = {**os.environ, "KERNEL_HUB_STATE_DIR": str(Path(tmp) / "hubs")}
        host = subprocess.Popen(
            [sys.executable, "-c", HOST, str(state_dir), str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert host.stdout is not None
        ids = json.loads(host.stdout.readline())
        host.send_signal(signal.SIGKILL)
        host.wait()
        for stream in (host.stdin, host.stdout):
            if stream is not None:
                stream.close()
        os.environ["KERNEL_HUB_STATE_DIR"] = env["KERNEL_HUB_STATE_DIR"]
        times = asyncio.run(adopt_rounds(state_dir, rounds, len(ids)))
    return {
        "kernels": count,
        "first_s": round(times[0], 3),
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
        "budget_s": 1.0,
    }


def bench_ps(rounds: int, count: int = 50) -> dict[str, object]:
    from kernel_hub.lifecycle.state import Owner, Record, StateDir

    with tempfile.TemporaryDirectory(prefix="kh-state-bench-") as tmp:
        root = Path(tmp) / "hubs"
        gone = Owner(2**22 + 7, "gone/1", os.uname().nodename)  # no such process
        for d in range(5):  # five hubs' state dirs, ten kernels each
            state = StateDir(root / f"hub{d}")
            for _ in range(count // 5):
                kid = str(uuid.uuid4())
                state.write(
                    Record(
                        kernel={
                            "kernel_id": kid,
                            "type_id": "ipykernel/python3",
                            "plugin": "ipykernel",
                            "nanny": False,
                            "connection_info": {"ip": "127.0.0.1", "key": "k" * 64},
                            "state": {"connection_file": f"/tmp/kernel-{kid}.json"},
                        },
                        owner=gone,
                        created=time.time() - 3600,
                        grace=300.0,
                    )
                )
        env = {**os.environ, "KERNEL_HUB_STATE_DIR": str(root)}
        out: dict[str, object] = {"records": count, "budget_s": 0.3}
        for name, argv in (("table", ["ps"]), ("json", ["ps", "--json"])):
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "kernel_hub", *argv],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                times.append(time.perf_counter() - t0)
            if name == "json":
                assert len(json.loads(done.stdout)) == count
            out[f"{name}_median_s"] = round(statistics.median(times), 3)
            out[f"{name}_max_s"] = round(max(times), 3)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args()
    results = {"adopt": bench_adopt(args.rounds), "ps": bench_ps(args.rounds)}
    a, p = results["adopt"], results["ps"]
    print(
        f"adopt {a['kernels']} kernels after kill -9: first {a['first_s']} s, "
        f"median {a['median_s']} s, max {a['max_s']} s (budget {a['budget_s']} s)"
    )
    print(
        f"kernel-hub ps, {p['records']} records: median {p['table_median_s']} s "
        f"(--json {p['json_median_s']} s), max {p['table_max_s']} s (budget {p['budget_s']} s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
