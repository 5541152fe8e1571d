"""Benchmark: SSH kernel start → ready, kernel_hub-ssh against a bare asyncssh script.

Both sides start from nothing (no open SSH connection), talk to the same real
OpenSSH sshd on loopback (the test kit's :func:`kernel_hub_ssh_testing.start_sshd`)
and the same remote venv with only ipykernel, and count as "ready" the same
thing: ``kernel_info`` answered and IOPub delivering (``wait_for_ready``).

- **kernel_hub**: ``hub.launch("ssh/box")``: connect, ship and start the nanny,
  forward 7 ports through reconnect-proof tunnels, wait for the kernel. By default
  its sockets are CurveZMQ-encrypted (ipykernel 7.4); the bare scripts' are not.
- **kernel_hub, plain**: the same with ``transport_encryption="disabled"``: the
  like-for-like comparison with the bare scripts.
- **bare asyncssh**: connect, send a connection file on stdin and exec
  ``python -m ipykernel_launcher`` remotely, ``forward_local_port`` the 5
  kernel ports, wait for the kernel. No nanny (no remote interrupt/kill/
  restart, no re-attach), no reconnects: the floor to compare against. Its
  ports are picked on the host, which is right only because the "remote" host
  is this machine.
- **bare, ports picked remotely**: the same, but a one-line Python on the remote
  side binds the five ports there, writes the file and execs ipykernel: what a
  script that cannot guess the remote ports (a real remote host) must do.

Run: ``uv run python bench/ssh_bench.py [-n 7]``. Target: ratio ≤ 1.05 (issue 26; it was 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kernel_hub_ssh.plugin as plugin
from kernel_hub_ssh._asyncssh import asyncssh  # imported quietly, as the plugin does
from kernel_hub_ssh_testing import make_remote_python, start_sshd

from kernel_hub import AsyncKernelClient, KernelHub
from kernel_hub.wire.connection import CHANNELS, new_connection_info

# A minimal remote launcher, as a script that cannot pick the ports on the host must be:
# bind five sockets to port 0 there, write the connection file (key from stdin), print the
# ports, then become the kernel.
_REMOTE_PICK = """\
import json, os, socket, sys
info = json.loads(sys.stdin.readline())
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
for name, s in zip(("shell", "iopub", "stdin", "control", "hb"), socks):
    info[name + "_port"] = s.getsockname()[1]
for s in socks:
    s.close()
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
os.write(fd, json.dumps(info).encode())
os.close(fd)
print(os.getpid(), json.dumps(info), flush=True)
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", "-f", path])
"""


async def _start_with_host_ports(conn, python: Path, remote_file: str) -> tuple[int, dict, Any]:
    """Send a connection file with ports picked here and exec ipykernel; return pid, info."""
    info = new_connection_info()  # ports free here are free "there" too: same machine
    # head -c reads exactly the file, leaving the channel open; $$ is the kernel's pid.
    payload = json.dumps(dict(info))
    cmd = (
        f"umask 077; echo $$; head -c {len(payload)} > {remote_file}; "
        f"exec {shlex.quote(str(python))} -m ipykernel_launcher -f {remote_file}"
    )
    proc = await conn.create_process(cmd)
    proc.stdin.write(payload)
    return int(await proc.stdout.readline()), dict(info), proc


async def _start_with_remote_ports(conn, python: Path, remote_file: str) -> tuple[int, dict, Any]:
    """Let one Python there pick the ports, write the file and become ipykernel."""
    seed = {k: v for k, v in new_connection_info().items() if not k.endswith("_port")}
    cmd = f"exec {shlex.quote(str(python))} -c {shlex.quote(_REMOTE_PICK)} {remote_file}"
    proc = await conn.create_process(cmd)
    proc.stdin.write(json.dumps(seed) + "\n")
    pid_text, _, info_text = (await proc.stdout.readline()).partition(" ")
    return int(pid_text), json.loads(info_text), proc


async def bare_asyncssh(server, python: Path, *, remote_ports: bool = False) -> float:
    """Start ipykernel over SSH by hand, forward its ports, wait until ready; return seconds.

    :param remote_ports: pick the ports on the remote side (else here).
    """
    t0 = time.perf_counter()
    conn = await asyncssh.connect(
        server.host,
        server.port,
        username=server.user,
        client_keys=[str(server.user_key)],
        known_hosts=str(server.known_hosts),
    )
    try:
        remote_file = f"/tmp/bench-kernel-{os.urandom(6).hex()}.json"
        start = _start_with_remote_ports if remote_ports else _start_with_host_ports
        pid, info, proc = await start(conn, python, remote_file)
        local = dict(info)
        listeners = []
        for channel in CHANNELS:
            listener = await conn.forward_local_port(
                "127.0.0.1", 0, "127.0.0.1", info[f"{channel}_port"]
            )
            listeners.append(listener)
            local[f"{channel}_port"] = listener.get_port()
        client = AsyncKernelClient(local)
        await client.connect()
        try:
            await client.wait_for_ready(60)
        finally:
            await client.close()
        elapsed = time.perf_counter() - t0
        # sshd ignores signal requests and a closed channel does not end a non-pty command.
        await conn.run(f"kill -9 {pid}; rm -f {remote_file}")
        proc.close()
        for listener in listeners:
            listener.close()
        return elapsed
    finally:
        conn.close()
        await conn.wait_closed()


async def with_kernel_hub(hub: KernelHub, encryption: str | None = None) -> float:
    """Launch ssh/box through the hub (start → ready); return seconds."""
    t0 = time.perf_counter()
    kernel = await hub.launch("ssh/box", transport_encryption=encryption)
    elapsed = time.perf_counter() - t0
    await kernel.shutdown(now=True)
    return elapsed


async def main(rounds: int) -> int:
    with tempfile.TemporaryDirectory(prefix="kh-ssh-bench-") as tmp:
        server = start_sshd(Path(tmp) / "sshd")
        try:
            python = make_remote_python(Path(tmp) / "venv")
            config = {"ssh": {"box": server.kernel_table(python=str(python))}}
            hub_times: list[float] = []
            plain_times: list[float] = []
            bare_times: list[float] = []
            remote_times: list[float] = []
            async with KernelHub(config=config, plugins=[plugin], load_entrypoints=False) as hub:
                # One warm-up of each: the first import of ipykernel fills the page cache.
                await with_kernel_hub(hub)
                await with_kernel_hub(hub, "disabled")
                await bare_asyncssh(server, python)
                await bare_asyncssh(server, python, remote_ports=True)
                for _ in range(rounds):  # interleaved, so load changes hit both alike
                    hub_times.append(await with_kernel_hub(hub))
                    plain_times.append(await with_kernel_hub(hub, "disabled"))
                    bare_times.append(await bare_asyncssh(server, python))
                    remote_times.append(await bare_asyncssh(server, python, remote_ports=True))
        finally:
            server.stop()
    hub_med, bare_med = statistics.median(hub_times), statistics.median(bare_times)
    print(f"rounds: {rounds} (after one warm-up each)")
    print(
        f"kernel_hub ssh/box start->ready: median {hub_med:.3f} s  "
        f"(min {min(hub_times):.3f}, max {max(hub_times):.3f})"
    )
    plain_med = statistics.median(plain_times)
    print(
        f"kernel_hub, Curve off:           median {plain_med:.3f} s  "
        f"(min {min(plain_times):.3f}, max {max(plain_times):.3f})"
    )
    print(
        f"bare asyncssh + ipykernel:       median {bare_med:.3f} s  "
        f"(min {min(bare_times):.3f}, max {max(bare_times):.3f})"
    )
    remote_med = statistics.median(remote_times)
    print(
        f"bare, ports picked remotely:      median {remote_med:.3f} s  "
        f"(min {min(remote_times):.3f}, max {max(remote_times):.3f})"
    )
    ratio = plain_med / bare_med
    print(
        f"ratio, Curve off (like for like): {ratio:.2f}x (target <= 1.05x): "
        f"{'OK' if ratio <= 1.05 else 'OVER'}"
    )
    print(f"  and to the bare script with ports picked remotely: {plain_med / remote_med:.2f}x")
    print(f"ratio, Curve on (the default) to the bare script: {hub_med / bare_med:.2f}x")
    print(f"what CurveZMQ costs the start: {hub_med / plain_med:.2f}x")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=7, help="measured rounds (>= 5)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(max(5, args.rounds))))
