"""Benchmark: Slurm kernel start → ready, kernel_hub-slurm against bare scripts, here and via SSH.

Both sides submit to the same real one-node Slurm cluster (the test kit's
:func:`kernel_hub_slurm_testing.start_cluster`, 2 CPUs, jobs of 1 CPU), run
the same Python's ipykernel on the node, and count as "ready" the same thing:
``kernel_info`` answered and IOPub delivering (``wait_for_ready``).

- **kernel_hub**: ``hub.launch("slurm/box")``: private job dir, nanny copy and
  0600 registration file, ``sbatch``, one ``squeue`` look, the nanny's signed
  dial-back, then wait for the kernel.
- **bare sbatch**: write a 0600 connection file here (the node shares this
  disk), ``sbatch --wrap "exec python -m ipykernel_launcher -f FILE"``, and poll
  ``kernel_info`` until it answers. No nanny (no interrupt/kill/restart through
  it, no re-attach, no progress, ports guessed on the host): the floor.

Through a login node (issue 25; a real sshd on loopback in front of the same cluster, the
ssh plugin's test kit), side by side in the same invocation:

- **kernel_hub via login**: ``hub.launch("slurm/far")`` with ``login`` set: connect, job
  files over SFTP, ``sbatch``/``squeue`` over SSH, the nanny's dial-back through a remote
  forward, seven local forwards to the node; the client on local ports.
- **bare ssh script**: connect with asyncssh, write a 0600 connection file over SFTP,
  ``sbatch --wrap`` over SSH, forward the kernel's five ports, poll ``kernel_info`` on the
  local ends. The connection is opened in each round on both sides.

Every run starts ``--settle`` seconds (3.5 by default) after the queue emptied. Slurm defers
a batch job's scheduling until ``batch_sched_delay`` (``SchedulerParameters``, 3 s by default)
after its last scheduling pass, and the previous job's end makes one: a run that starts 0.5 s
after the previous job ended waits ~2.5 s in the queue, one that starts 2 s after waits ~1 s
(checked with this kit's cluster). Without the settle, each side's queue wait depended on how
long the *previous* scenario's teardown took, and that, not the launch, decided the ratio.
``--settle 0`` measures the old way.

Run (as root, with slurm-wlm installed): ``uv run python bench/slurm_bench.py [-n 7]``
(``--no-login`` skips the login node). Target: each ratio ≤ 1.2.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kernel_hub_slurm.plugin as plugin
from kernel_hub_slurm_testing import start_cluster

from kernel_hub import AsyncKernelClient, KernelHub
from kernel_hub.provider import CHANNELS
from kernel_hub.wire.connection import new_connection_info, write_connection_file

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


async def bare_sbatch(tmp: Path) -> float:
    """Submit ipykernel with a host-written connection file, wait until ready; return seconds."""
    t0 = time.perf_counter()
    info = new_connection_info()
    path = tmp / f"kernel-{info['shell_port']}.json"
    write_connection_file(info, path)
    proc = await asyncio.create_subprocess_exec(
        "sbatch",
        "--parsable",
        "-c1",
        "-o/dev/null",
        "--wrap",
        f"exec {sys.executable} -m ipykernel_launcher -f {path}",
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    job = out.decode().strip()
    client = AsyncKernelClient(info)
    await client.connect()
    try:
        await client.wait_for_ready(120)
    finally:
        await client.close()
    elapsed = time.perf_counter() - t0
    subprocess.run(["scancel", job], check=True)
    os.unlink(path)
    return elapsed


async def bare_ssh(server: Any, tmp: Path) -> float:
    """Do by hand through the login node what kernel_hub does; return seconds to ready."""
    from kernel_hub_ssh._asyncssh import asyncssh

    t0 = time.perf_counter()
    conn = await asyncssh.connect(
        "127.0.0.1",
        port=server.port,
        username=server.user,
        client_keys=[str(server.user_key)],
        known_hosts=str(server.known_hosts),
    )
    try:
        info = new_connection_info()  # ports guessed here: the node is this machine
        local = tmp / f"local-{info['shell_port']}.json"
        write_connection_file(info, local)
        path = str(tmp / f"kernel-{info['shell_port']}.json")
        async with conn.start_sftp_client() as sftp:
            async with sftp.open(path, "xb", asyncssh.SFTPAttrs(permissions=0o600)) as f:
                await f.write(local.read_bytes())
        local.unlink()
        wrap = f"exec {sys.executable} -m ipykernel_launcher -f {path}"
        job = (
            await conn.run(
                shlex.join(["sbatch", "--parsable", "-c1", "-o/dev/null", "--wrap", wrap]),
                check=True,
            )
        ).stdout.strip()
        forwarded = dict(info)
        for channel in CHANNELS:
            port = int(info[f"{channel}_port"])
            listener = await conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", port)
            forwarded[f"{channel}_port"] = listener.get_port()
        client = AsyncKernelClient(forwarded)
        await client.connect()
        try:
            await client.wait_for_ready(120)
        finally:
            await client.close()
        elapsed = time.perf_counter() - t0
        await conn.run(f"scancel {job}; rm -f {path}", check=True)
    finally:
        conn.close()
        await conn.wait_closed()
    return elapsed


async def with_kernel_hub(hub: KernelHub, type_id: str = "slurm/box") -> float:
    """Launch *type_id* through the hub (start → ready); return seconds."""
    t0 = time.perf_counter()
    kernel = await hub.launch(type_id, ready_timeout=120)
    elapsed = time.perf_counter() - t0
    await kernel.shutdown(now=True)
    return elapsed


def _line(label: str, times: list[float]) -> str:
    return (
        f"{label:<36} median {statistics.median(times):.3f} s  "
        f"(min {min(times):.3f}, max {max(times):.3f})"
    )


async def main(rounds: int, *, login: bool, settle: float) -> int:
    cluster = start_cluster()
    os.environ.update(cluster.env)
    server = None
    times: dict[str, list[float]] = {"hub": [], "bare": [], "hub_login": [], "bare_ssh": []}
    try:
        with tempfile.TemporaryDirectory(prefix="kh-slurm-bench-") as tmp:
            table = {"python": sys.executable, "cpus": 1, "job_dir": f"{tmp}/jobs"}
            config: dict[str, Any] = {"slurm": {"box": table}}
            if login:
                from kernel_hub_ssh_testing import start_sshd

                server = start_sshd(
                    Path(tmp, "login"),
                    extra_config=[
                        f"SetEnv SLURM_CONF={cluster.conf}",
                        "Subsystem sftp internal-sftp",
                    ],
                )
                config["ssh"] = {"hpc": server.kernel_table()}
                config["slurm"]["far"] = {**table, "login": "hpc"}
            scenarios: list[tuple[str, Callable[[], Awaitable[float]]]] = []
            async with KernelHub(config=config, plugins=[plugin], load_entrypoints=False) as hub:
                scenarios = [
                    ("hub", lambda: with_kernel_hub(hub)),
                    ("bare", lambda: bare_sbatch(Path(tmp))),
                ]
                if server is not None:
                    login_node = server
                    scenarios += [
                        ("hub_login", lambda: with_kernel_hub(hub, "slurm/far")),
                        ("bare_ssh", lambda: bare_ssh(login_node, Path(tmp))),
                    ]

                async def idle() -> None:
                    assert not cluster.wait_queue_empty(60)  # both CPUs free before each
                    # Past Slurm's batch_sched_delay since the last job's end: every run
                    # finds the scheduler in the same state (see the module docstring).
                    await asyncio.sleep(settle)

                # One warm-up of each: the first import of ipykernel fills the page cache.
                for _, run in scenarios:
                    await idle()
                    await run()
                for _ in range(rounds):  # interleaved, so load changes hit all alike
                    for name, run in scenarios:
                        await idle()
                        times[name].append(await run())
    finally:
        if server is not None:
            server.stop()
        leftovers = cluster.stop()
    assert not leftovers, leftovers
    print(f"rounds: {rounds} (after one warm-up each, interleaved; settle {settle:g} s)")
    pairs = [("hub", "bare", "kernel_hub slurm/box", "bare sbatch + ipykernel")]
    if login:
        pairs.append(
            ("hub_login", "bare_ssh", "kernel_hub slurm/far (login)", "bare ssh sbatch + tunnels")
        )
    for ours, theirs, our_label, their_label in pairs:
        print(_line(our_label + " start->ready:", times[ours]))
        print(_line(their_label + ":", times[theirs]))
        ratio = statistics.median(times[ours]) / statistics.median(times[theirs])
        print(f"  ratio: {ratio:.2f}x (target <= 1.2x): {'OK' if ratio <= 1.2 else 'OVER'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=7, help="measured rounds (>= 5)")
    parser.add_argument(
        "--no-login", action="store_true", help="skip the login-node pair (no sshd, no ssh plugin)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=3.5,
        help="seconds between the queue emptying and each run (past batch_sched_delay)",
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(max(5, args.rounds), login=not args.no_login, settle=args.settle)))
