"""Test kit of the SSH provider: a real OpenSSH ``sshd`` on loopback and a "remote" Python.

Used by the plugin's own tests and by its benchmark; usable by anyone who
tests code on top of ``kernel-hub-ssh`` (``pip install 'kernel-hub-ssh[testing]'``,
which installs this distribution, ``kernel-hub-ssh-testing``):

.. code-block:: python

    server = start_sshd(tmp_path)            # sshd -D on 127.0.0.1:<free port>
    python = make_remote_python(tmp_path / "venv")   # a venv with only ipykernel
    config = {"ssh": {"box": server.kernel_table(python=str(python))}}
    ...
    server.stop()

Nothing here needs root except that sshd must be allowed to log the test's
user in; the suite runs as root in CI, hence ``PermitRootLogin yes``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The process and port helpers are the core kit's; re-exported here, where this kit's
# users have always found them.
from kernel_hub.testing import children, descendants, free_ports, processes_running, wait_gone

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "SSHD",
    "SSHServer",
    "descendants",
    "listening_sockets",
    "process_listing",
    "make_remote_python",
    "processes_running",
    "start_sshd",
    "wait_gone",
]

#: Debian's OpenSSH server binary.
SSHD = "/usr/sbin/sshd"


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def listening_sockets() -> list[tuple[str, int]]:
    """Return ``(address, port)`` of every listening TCP socket on this machine (from /proc)."""
    out = []
    for path, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(path) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            out.append((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return out


def process_listing() -> str:
    """Return every process's full command line, one a line (what ``ps -eo args`` shows)."""
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    lines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return "\n".join(lines)


@dataclass
class SSHServer:
    """A running ``sshd -D`` on loopback, with everything a client needs to log in.

    :param workdir: holds the keys, sshd_config, known_hosts and sshd's log.
    :param port: the port sshd listens on (127.0.0.1 only).
    :param user: the user to log in as (the one running the tests).
    :param user_key: the client's private key (its ``.pub`` is the authorized key).
    :param known_hosts: a known_hosts file holding sshd's host key.
    :param ssh_config: an ``ssh_config`` file defining the alias :attr:`alias`.
    """

    workdir: Path
    port: int
    user: str
    user_key: Path
    host_key: Path
    known_hosts: Path
    ssh_config: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    #: The ``Host`` alias that :attr:`ssh_config` maps to this server.
    alias: str = "kh-test-sshd"

    def __repr__(self) -> str:
        state = "RUNNING" if self.proc is not None and self.proc.poll() is None else "STOPPED"
        return f"<SSHServer {self.user}@{self.host}:{self.port} [{state} pid={self.pid}]>"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def session_pids(self) -> list[int]:
        """Return the per-connection sshd processes (the listener's direct children)."""
        return children(self.pid) if self.pid else []

    def kernel_table(self, **fields: Any) -> dict[str, Any]:
        """Return a ``[ssh.<name>]`` config table that logs in to this server.

        Keyword arguments are added to (or override) the table's fields.
        """
        table: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.user_key),
            "known_hosts": str(self.known_hosts),
        }
        table.update(fields)
        return table

    def log(self) -> str:
        """Return sshd's log (``-E`` file)."""
        try:
            return (self.workdir / "sshd.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop sshd and every process of its connections (idempotent)."""
        if self.proc is None:
            return
        # Per-connection children call setsid(), so killing the listener's group is not enough.
        # End them first, while the listener is still there to reap them: orphaned, they would
        # stay zombies wherever PID 1 does not reap.
        children = descendants(self.proc.pid)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        wait_gone(children, 5.0)
        pids = [self.proc.pid, *children]
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for pid in pids[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None


def start_sshd(
    workdir: str | os.PathLike[str], *, timeout: float = 15.0, extra_config: Sequence[str] = ()
) -> SSHServer:
    """Start a real OpenSSH sshd on 127.0.0.1 on a free port, with fresh keys.

    Writes a host key, a user key authorized for the current user, an
    ``sshd_config``, a ``known_hosts`` holding the host key, and an
    ``ssh_config`` with an alias, all in *workdir*; starts ``sshd -D`` and
    returns once it accepts TCP connections.

    :param extra_config: more ``sshd_config`` lines, e.g. ``SetEnv SLURM_CONF=...`` (the
        environment of every session, as a site sets it up on a login node); a line
        whose keyword the kit sets replaces the kit's (``GatewayPorts clientspecified``).
    :raises RuntimeError: quoting sshd's log when it does not come up within *timeout*.
    """
    if not os.path.exists(SSHD):
        raise FileNotFoundError(f"{SSHD} is missing; run: apt-get install openssh-server")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o700)
    # sshd refuses to start without its privilege-separation directory.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    host_key, user_key = work / "host_ed25519", work / "user_ed25519"
    _keygen(host_key, "kernel-hub test host")
    _keygen(user_key, "kernel-hub test user")
    authorized = work / "authorized_keys"
    shutil.copy(user_key.with_suffix(".pub"), authorized)
    (port,) = free_ports(1)
    user = getpass.getuser()
    config = work / "sshd_config"
    defaults = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}",
        f"PidFile {work / 'sshd.pid'}",
        "StrictModes no",
        "UsePAM no",
        "PermitRootLogin yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "AllowTcpForwarding yes",
        "GatewayPorts no",
        "X11Forwarding no",
        "PrintMotd no",
        "LogLevel VERBOSE",
        # Many parallel test connections must not be throttled.
        "MaxStartups 100",
        "MaxSessions 100",
    ]
    # sshd keeps a keyword's first value: a line of extra_config replaces the kit's own.
    replaced = {line.split()[0].lower() for line in extra_config if line.strip()}
    kept = [line for line in defaults if line.split()[0].lower() not in replaced]
    config.write_text("\n".join([*kept, *extra_config, ""]))
    host_pub = (host_key.with_suffix(".pub")).read_text().split()
    known_hosts = work / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    server = SSHServer(
        workdir=work,
        port=port,
        user=user,
        user_key=user_key,
        host_key=host_key,
        known_hosts=known_hosts,
        ssh_config=work / "ssh_config",
    )
    server.ssh_config.write_text(
        f"Host {server.alias}\n"
        f"    HostName 127.0.0.1\n"
        f"    Port {port}\n"
        f"    User {user}\n"
        f"    IdentityFile {user_key}\n"
        f"    UserKnownHostsFile {known_hosts}\n"
    )
    server.proc = subprocess.Popen(
        [SSHD, "-D", "-f", str(config), "-E", str(work / "sshd.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            log = server.log()
            server.proc = None
            raise RuntimeError(f"sshd exited at start-up; its log:\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(
                    f"sshd did not accept connections on port {port} within {timeout} s; "
                    f"its log:\n{server.log()}"
                ) from None
            # Polling a TCP connect is the only readiness signal sshd -D gives.
            time.sleep(0.02)


def make_remote_python(
    venv: str | os.PathLike[str], *, packages: tuple[str, ...] = ("ipykernel",)
) -> Path:
    """Create a venv with only *packages* (uv) and return its python.

    This is the "remote" Python of the tests: it does not see kernel_hub, so a
    kernel that works there proves that the remote side needs nothing else.
    """
    uv = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets UV to itself
    if uv is None:
        raise FileNotFoundError("uv is needed to build the remote test venv: pip install uv")
    path = Path(venv)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    # This interpreter: uv must not try to download another one.
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(path)], check=True, env=env)
    python = path / "bin" / "python"
    if packages:
        install = [uv, "pip", "install", "-q", "--python", str(python), *packages]
        # The shared uv cache usually has them: try offline first, the index only if needed.
        if subprocess.run([*install, "--offline"], env=env, capture_output=True).returncode:
            subprocess.run(install, check=True, env=env)
    return python
