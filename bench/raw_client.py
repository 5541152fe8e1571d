"""The raw client: the least a Python host can do to run an ipykernel.

This is the benchmark's yardstick, not a library. It writes a connection file
by hand, starts the kernel with :class:`subprocess.Popen`, and talks to it
over plain blocking pyzmq sockets (DEALER for shell and control, SUB for
IOPub) with hand-written HMAC-SHA256 signing and ``json``. There is no event
loop, no thread of its own, no message object and no replay check: every
message is verified, parsed into four dicts, and looked at once.

Readiness uses the same protocol as kernel_hub: send ``kernel_info_request``
until it is answered *and* an IOPub message has arrived (re-sending every
50 ms after the first reply while IOPub is still silent), so that output of
the next execution cannot be lost to a late subscription.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import select
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import zmq

__all__ = ["RawKernel", "shutdown_all", "wait_all_ready"]

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"
#: Seconds between kernel_info nudges while the kernel answers but IOPub is silent.
NUDGE_INTERVAL = 0.05

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


def _free_ports(n: int) -> list[int]:
    """Return *n* distinct loopback ports, holding all of them until all are found."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RawKernel:
    """One kernel process and the three sockets the benchmark needs.

    :param argv: the kernel command line; ``{connection_file}`` is filled in.
    :param env: the kernel's full environment.
    :param runtime_dir: where the connection file is written.
    :param context: the ZeroMQ context for the sockets.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        runtime_dir: str,
        context: zmq.Context | None = None,
    ) -> None:
        self.argv_template = list(argv)
        self.env = dict(env)
        self.runtime_dir = runtime_dir
        self.context = context or zmq.Context.instance()
        self.key = secrets.token_hex(32).encode("ascii")
        self.session = uuid.uuid4().hex
        self._hmac = hmac.new(self.key, digestmod=hashlib.sha256)
        self.proc: subprocess.Popen[bytes] | None = None
        self.connection_file: str | None = None
        self.shell: zmq.Socket | None = None
        self.control: zmq.Socket | None = None
        self.iopub: zmq.Socket | None = None
        self.poller = zmq.Poller()
        # readiness bookkeeping, used by wait_all_ready()
        self.got_reply = False
        self.iopub_seen = False
        self.last_nudge = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    # ---- start ----

    def launch(self) -> None:
        """Write the connection file, start the process, connect, and ask for kernel_info."""
        ports = _free_ports(5)
        info = {
            "transport": "tcp",
            "ip": "127.0.0.1",
            "shell_port": ports[0],
            "iopub_port": ports[1],
            "stdin_port": ports[2],
            "control_port": ports[3],
            "hb_port": ports[4],
            "key": self.key.decode("ascii"),
            "signature_scheme": "hmac-sha256",
            "kernel_name": "",
        }
        path = os.path.join(self.runtime_dir, f"kernel-raw-{secrets.token_hex(8)}.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        self.connection_file = path
        argv = [a.replace("{connection_file}", path) for a in self.argv_template]
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        ctx = self.context
        self.shell = ctx.socket(zmq.DEALER)
        self.control = ctx.socket(zmq.DEALER)
        self.iopub = ctx.socket(zmq.SUB)
        self.iopub.setsockopt(zmq.SUBSCRIBE, b"")
        for sock in (self.shell, self.control, self.iopub):
            sock.linger = 0
        self.shell.connect(f"tcp://127.0.0.1:{info['shell_port']}")
        self.control.connect(f"tcp://127.0.0.1:{info['control_port']}")
        self.iopub.connect(f"tcp://127.0.0.1:{info['iopub_port']}")
        self.poller.register(self.shell, zmq.POLLIN)
        self.poller.register(self.iopub, zmq.POLLIN)
        # Queued by ZeroMQ until the kernel binds; answered as soon as it listens.
        self.send(self.shell, "kernel_info_request", {})

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until kernel_info is answered and IOPub has delivered a message."""
        wait_all_ready([self], timeout=timeout)

    # ---- wire ----

    def send(self, sock: zmq.Socket, msg_type: str, content: Mapping[str, Any]) -> str:
        """Sign and send one message; return its msg_id."""
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "bench",
            "session": self.session,
            "date": datetime.now(UTC).isoformat(),
            "version": PROTOCOL_VERSION,
        }
        parts = [_dumps(header).encode(), b"{}", b"{}", _dumps(content).encode()]
        h = self._hmac.copy()
        for p in parts:
            h.update(p)
        sock.send_multipart([DELIM, h.hexdigest().encode("ascii"), *parts])
        return msg_id

    def parse(self, frames: list[bytes]) -> tuple[dict, dict, dict, dict]:
        """Verify and decode one message into (header, parent_header, metadata, content)."""
        i = frames.index(DELIM)
        parts = frames[i + 2 : i + 6]
        h = self._hmac.copy()
        for p in parts:
            h.update(p)
        if not hmac.compare_digest(h.hexdigest().encode("ascii"), frames[i + 1]):
            raise ValueError("bad signature")
        header, parent, metadata, content = (_loads(p) for p in parts)
        return header, parent, metadata, content

    # ---- requests ----

    def execute(
        self,
        code: str,
        *,
        on_output: Callable[[str, dict], None] | None = None,
        timeout: float = 60.0,
    ) -> dict:
        """Run *code*; return the reply content once the reply and IOPub idle both arrived.

        :param on_output: called with ``(msg_type, content)`` for the execution's
            IOPub messages other than status.
        """
        content = {
            "code": code,
            "silent": False,
            "store_history": True,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        }
        shell, iopub = self.shell, self.iopub
        msg_id = self.send(shell, "execute_request", content)
        reply: dict | None = None
        idle = False
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            events = dict(self.poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
            if not events:
                raise TimeoutError(f"no execute_reply/idle within {timeout} s")
            if iopub in events:
                while True:
                    try:
                        frames = iopub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    header, parent, _, body = self.parse(frames)
                    if parent.get("msg_id") != msg_id:
                        continue
                    msg_type = header["msg_type"]
                    if msg_type == "status":
                        if body["execution_state"] == "idle":
                            idle = True
                    elif on_output is not None:
                        on_output(msg_type, body)
            if shell in events:
                while True:
                    try:
                        frames = shell.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    _, parent, _, body = self.parse(frames)
                    if parent.get("msg_id") == msg_id:
                        reply = body
        return reply

    # ---- stop ----

    def request_shutdown(self) -> None:
        """Send shutdown_request on the control channel."""
        self.send(self.control, "shutdown_request", {"restart": False})

    def close(self) -> None:
        """Close the sockets, kill the process group if it still runs, remove the file."""
        for sock in (self.shell, self.control, self.iopub):
            if sock is not None:
                sock.close(linger=0)
        self.shell = self.control = self.iopub = None
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.connection_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.connection_file)
            self.connection_file = None

    def shutdown(self, timeout: float = 10.0) -> None:
        """Ask the kernel to shut down, wait for its process to end, and clean up."""
        shutdown_all([self], timeout=timeout)


def wait_all_ready(kernels: Sequence[RawKernel], *, timeout: float = 60.0) -> None:
    """Block until every kernel answered kernel_info and delivered on IOPub (one poller)."""
    deadline = time.monotonic() + timeout
    waiting = {k for k in kernels if not (k.got_reply and k.iopub_seen)}
    poller = zmq.Poller()
    owner: dict[zmq.Socket, tuple[RawKernel, str]] = {}
    for k in waiting:
        poller.register(k.shell, zmq.POLLIN)
        poller.register(k.iopub, zmq.POLLIN)
        owner[k.shell] = (k, "shell")
        owner[k.iopub] = (k, "iopub")
    while waiting:
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(f"{len(waiting)} kernel(s) not ready within {timeout} s")
        # Wake for the next nudge of a kernel that answered while IOPub is silent.
        wake = deadline
        for k in waiting:
            if k.got_reply:
                wake = min(wake, k.last_nudge + NUDGE_INTERVAL)
            elif k.proc is not None and k.proc.poll() is not None:
                raise RuntimeError(f"kernel {k.pid} exited during start ({k.proc.returncode})")
        events = poller.poll(max(0, int((wake - now) * 1000)) if wake < deadline else 100)
        for sock, _ in events:
            k, name = owner[sock]
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                header, _, _, _ = k.parse(frames)
                if name == "iopub":
                    k.iopub_seen = True
                elif header["msg_type"] == "kernel_info_reply":
                    k.got_reply = True
        now = time.monotonic()
        for k in list(waiting):
            if k.got_reply and k.iopub_seen:
                waiting.discard(k)
                poller.unregister(k.shell)
                poller.unregister(k.iopub)
            elif k.got_reply and now - k.last_nudge >= NUDGE_INTERVAL:
                k.send(k.shell, "kernel_info_request", {})
                k.last_nudge = now


def shutdown_all(kernels: Iterable[RawKernel], *, timeout: float = 10.0) -> None:
    """Send shutdown_request to every kernel, wait until all processes ended, clean up.

    The wait uses one pidfd per process in a single ``select``: no polling interval.
    Kernels that outlive *timeout* are killed.
    """
    kernels = list(kernels)
    for k in kernels:
        k.request_shutdown()
    pidfds: dict[int, RawKernel] = {}
    for k in kernels:
        try:
            pidfds[os.pidfd_open(k.pid)] = k
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    try:
        while pidfds:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select(list(pidfds), [], [], left)
            for fd in ready:
                pidfds.pop(fd).proc.wait()
                os.close(fd)
    finally:
        for fd in pidfds:
            os.close(fd)
        for k in kernels:
            k.close()
