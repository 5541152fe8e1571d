"""Start → ready with the registration handshake (JEP 66) against ports chosen in advance.

The same kernel (xeus-python 0.19 from PyPI, ``sys.executable -m xpython_launcher -f
{connection_file}``) is launched through one hub both ways, interleaved, in an order
rotated every round: ``params={"registration": True}`` (the kernel binds its ports and
reports them) and ``{"registration": False}`` (kernel_hub chooses five free ports and
writes them into the file). Each figure is ``await hub.launch(...)`` until it returns
(the kernel answered ``kernel_info`` and IOPub delivered), then the kernel is shut down
outside the timing. Locally and under a local nanny (``nanny=True``), and with
``--ssh`` also over SSH (the ssh plugin's test kit: a real sshd on loopback and a "remote"
venv with xeus-python and pyzmq; the remote nanny starts the kernel with ``--registration``
or without). Ratios are taken per round (handshake / classic) and their median is reported.

    uv run python bench/registration_bench.py             # 15 rounds
    uv run python bench/registration_bench.py --rounds 3 --ssh
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ARGV = [sys.executable, "-m", "xpython_launcher", "-f", "{connection_file}"]
VARIANTS = ("local_handshake", "local_classic", "nanny_handshake", "nanny_classic")
SSH_VARIANTS = ("ssh_handshake", "ssh_classic")


async def start(hub, variant: str) -> float:
    where, how = variant.split("_")
    t0 = time.perf_counter()
    kernel = await hub.launch(
        "ssh/bench-xpython" if where == "ssh" else "spec/bench-xpython",
        nanny=where == "nanny",
        restart=False,
        params={"registration": how == "handshake"},
    )
    elapsed = time.perf_counter() - t0
    await kernel.shutdown()
    return elapsed


def ssh_config(tmp: Path, stack: contextlib.ExitStack) -> dict:
    """Start the test sshd and a "remote" venv with xeus-python; return the [ssh] config."""
    from kernel_hub_ssh_testing import make_remote_python, start_sshd

    server = start_sshd(tmp / "sshd")
    stack.callback(server.stop)
    python = make_remote_python(tmp / "xeus-venv", packages=("pyzmq", "xeus-python~=0.19.0"))
    argv = [str(python), "-m", "xpython_launcher", "-f", "{connection_file}"]
    return {"bench-xpython": server.kernel_table(python=str(python), argv=argv)}


async def main(rounds: int, ssh: bool) -> dict:
    from kernel_hub import KernelHub

    variants = VARIANTS + SSH_VARIANTS if ssh else VARIANTS
    rows: dict[str, list[float]] = {v: [] for v in variants}
    with (
        tempfile.TemporaryDirectory(prefix="kh-registration-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        spec = Path(tmp) / "share" / "jupyter" / "kernels" / "bench-xpython"
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(
            json.dumps({"argv": ARGV, "display_name": "bench", "language": "python"})
        )
        os.environ["JUPYTER_PATH"] = str(Path(tmp) / "share" / "jupyter")
        config = {"ssh": ssh_config(Path(tmp), stack)} if ssh else {}
        async with KernelHub(config=config) as hub:
            for v in variants:  # one warm-up each: imports, the reaper, the page cache
                await start(hub, v)
            for r in range(rounds):
                order = variants[r % len(variants) :] + variants[: r % len(variants)]
                for v in order:
                    rows[v].append(await start(hub, v))
                print(f"round {r + 1}/{rounds}", file=sys.stderr)

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(rows[a], rows[b], strict=True)), 3)

    out = {
        "rounds": rounds,
        "median_s": {k: round(statistics.median(v), 4) for k, v in rows.items()},
        "max_s": {k: round(max(v), 4) for k, v in rows.items()},
        "ratio_local_handshake_to_classic": ratio("local_handshake", "local_classic"),
        "ratio_nanny_handshake_to_classic": ratio("nanny_handshake", "nanny_classic"),
    }
    if ssh:
        out["ratio_ssh_handshake_to_classic"] = ratio("ssh_handshake", "ssh_classic")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ssh", action="store_true", help="also over SSH (needs sshd and uv)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rounds, args.ssh)), indent=1))
