"""A fake kernel: a small process that speaks the Jupyter protocol and runs no code.

Run it by path (``python protokernel.py -f <connection file>``), not with ``-m``:
it imports the standard library and pyzmq only, nothing of kernel_hub, so one
costs a few MB and starts in tens of milliseconds, and a test or a benchmark can
hold hundreds of them in one hub. :func:`kernel_hub.testing.fake_kernel_plugin`
offers it as the kernel type ``fake/echo``.

It binds the five ports of the connection file and, on one thread with one
``zmq.Poller``, answers:

- ``kernel_info_request`` (and any other shell request, with a minimal reply),
  with ``busy`` and ``idle`` on IOPub around each shell request;
- ``execute_request``: ``execute_input``, one ``stream`` (stdout) output echoing
  the code unless it is empty or ``pass``, and an ``execute_reply``; code that
  starts with ``sleep <seconds>`` keeps it busy that long after the echo, and an
  interrupt (SIGINT, or ``interrupt_request`` on control) ends it with a
  ``KeyboardInterrupt`` error reply;
- heartbeat (echo), ``interrupt_request`` and ``shutdown_request`` on control
  (reply, also published on IOPub, then exit 0).

Every message is signed with the file's key (HMAC-SHA256); a received message
whose signature is wrong is dropped. Environment variables change its behaviour
for tests:

- ``KERNEL_HUB_FAKE_SHUTDOWN_DELAY``: seconds to wait after the ``shutdown_reply``
  before exiting (a kernel that is slow to tear down; ``inf``: never exits by itself);
- ``KERNEL_HUB_FAKE_SHUTDOWN_DIR``: a directory in which the kernel, from its
  ``shutdown_request`` until it exits, holds a file ``active-<pid>``, and where it
  writes ``seen-<pid>``: how many such files it saw on arrival (how many kernels
  were ending at once).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from _operator import _compare_digest as compare_digest
from typing import TYPE_CHECKING, Any  # already imported by zmq: free

import zmq

if TYPE_CHECKING:
    from collections.abc import Callable

# HMAC-SHA256 by hand on the built-in SHA-256: ``hmac`` would import hashlib and with it
# OpenSSL's libcrypto, 3.7 MB of RSS in every fake kernel.
try:
    from _sha256 import sha256  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python 3.12+ calls it _sha2; a build without either has hashlib
    try:
        from _sha2 import sha256  # type: ignore[import-not-found,no-redef,unused-ignore]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment,unused-ignore]

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"
KERNEL_INFO = {
    "status": "ok",
    "protocol_version": PROTOCOL_VERSION,
    "implementation": "kernel_hub-fake",
    "implementation_version": "1.0",
    "language_info": {"name": "text", "version": "1.0", "mimetype": "text/plain"},
    "banner": "kernel_hub's fake kernel: echoes code, runs nothing",
    "help_links": [],
}


def _new_id() -> str:
    return os.urandom(16).hex()


def _now() -> str:
    """Return the current UTC time in ISO 8601 (without importing datetime)."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def make_signer(key: bytes) -> Callable[[list[bytes]], bytes]:
    """Return a function giving the hex HMAC-SHA256 of a message's parts (empty without a key)."""
    if not key:
        return lambda parts: b""
    if len(key) > 64:  # HMAC: a key longer than SHA-256's block is hashed first
        key = sha256(key).digest()
    key = key.ljust(64, b"\0")
    inner_pad = sha256(bytes(b ^ 0x36 for b in key))
    outer_pad = sha256(bytes(b ^ 0x5C for b in key))

    def sign(parts: list[bytes]) -> bytes:
        inner = inner_pad.copy()
        for p in parts:
            inner.update(p)
        outer = outer_pad.copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode()

    return sign


class FakeKernel:
    """The kernel's state: sockets, session, the execution in progress."""

    def __init__(self, info: dict, *, shutdown_delay: float, shutdown_dir: str | None) -> None:
        self.sign = make_signer(info.get("key", "").encode())
        self.session = _new_id()
        self.shutdown_delay = shutdown_delay
        self.shutdown_dir = shutdown_dir
        self.topic = f"kernel.{self.session}".encode()
        self.count = 0
        self.bad_signatures = 0
        self.interrupted = False
        #: The execution in progress: the request's idents and header.
        self.running: tuple[list[bytes], dict] = ([], {})
        self.ctx = ctx = zmq.Context()
        url = f"{info.get('transport', 'tcp')}://{info['ip']}:%d"
        self.shell = ctx.socket(zmq.ROUTER)
        self.control = ctx.socket(zmq.ROUTER)
        self.stdin = ctx.socket(zmq.ROUTER)
        self.iopub = ctx.socket(zmq.PUB)
        self.hb = ctx.socket(zmq.REP)
        for sock, name in (
            (self.shell, "shell"),
            (self.control, "control"),
            (self.stdin, "stdin"),
            (self.iopub, "iopub"),
            (self.hb, "hb"),
        ):
            sock.linger = 1000  # a reply sent just before exiting still goes out
            sock.bind(url % info[f"{name}_port"])

    # ---- the wire ----

    def send(
        self, sock: zmq.Socket, msg_type: str, content: dict, parent: dict, idents: list[bytes]
    ) -> None:
        header = {
            "msg_id": _new_id(),
            "session": self.session,
            "username": "fake",
            "date": _now(),
            "msg_type": msg_type,
            "version": PROTOCOL_VERSION,
        }
        parts = [json.dumps(p).encode() for p in (header, parent, {}, content)]
        sock.send_multipart([*idents, DELIM, self.sign(parts), *parts])

    def publish(self, msg_type: str, content: dict, parent: dict, topic: bytes) -> None:
        self.send(self.iopub, msg_type, content, parent, [topic])

    def status(self, state: str, parent: dict) -> None:
        self.publish("status", {"execution_state": state}, parent, self.topic + b".status")

    def receive(self, sock: zmq.Socket) -> tuple[list[bytes], dict, dict] | None:
        """Return (idents, header, content) of a verified message, or None to drop it."""
        frames = sock.recv_multipart()
        try:
            i = frames.index(DELIM)
            sig, parts = frames[i + 1], frames[i + 2 : i + 6]
            if len(parts) != 4 or not compare_digest(sig, self.sign(parts)):
                self.bad_signatures += 1
                return None
            header, content = json.loads(parts[0]), json.loads(parts[3])
        except (ValueError, IndexError):
            return None
        if type(header) is not dict or type(content) is not dict:
            return None
        return frames[:i], header, content

    # ---- requests ----

    def on_shell(self) -> float | None:
        """Answer one shell request; return when a ``sleep`` execution ends, if it started one."""
        msg = self.receive(self.shell)
        if msg is None:
            return None
        idents, header, content = msg
        msg_type = header.get("msg_type", "")
        self.status("busy", header)
        if msg_type == "execute_request":
            return self.execute(idents, header, content)
        if msg_type == "kernel_info_request":
            reply = KERNEL_INFO
        elif msg_type == "is_complete_request":
            reply = {"status": "complete"}
        elif msg_type == "comm_info_request":
            reply = {"status": "ok", "comms": {}}
        else:
            reply = {"status": "ok"}
        self.send(self.shell, msg_type.replace("_request", "_reply"), reply, header, idents)
        self.status("idle", header)
        return None

    def execute(self, idents: list[bytes], header: dict, content: dict) -> float | None:
        code = str(content.get("code", ""))
        if not content.get("silent") and content.get("store_history", True):
            self.count += 1
        self.publish(
            "execute_input",
            {"code": code, "execution_count": self.count},
            header,
            b"kernel." + self.session.encode() + b".execute_input",
        )
        self.running = (idents, header)
        if code.strip() not in ("", "pass"):
            stream = {"name": "stdout", "text": code if code.endswith("\n") else code + "\n"}
            self.publish("stream", stream, header, b"stream.stdout")
        words = code.split()
        if len(words) >= 2 and words[0] == "sleep":  # ``sleep 30 # go``: busy for 30 s
            try:
                return time.monotonic() + float(words[1])
            except ValueError:
                pass
        self.finish_execution()
        return None

    def finish_execution(self, *, interrupted: bool = False) -> None:
        idents, header = self.running
        reply: dict = {"status": "ok", "execution_count": self.count}
        if interrupted:
            error = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": []}
            reply = {"status": "error", "execution_count": self.count, **error}
            self.publish("error", error, header, b"kernel." + self.session.encode() + b".error")
        else:
            reply.update(user_expressions={}, payload=[])
        self.send(self.shell, "execute_reply", reply, header, idents)
        self.status("idle", header)

    def on_control(self) -> bool:
        """Answer one control request; return True on ``shutdown_request``."""
        msg = self.receive(self.control)
        if msg is None:
            return False
        idents, header, content = msg
        msg_type = header.get("msg_type", "")
        if msg_type == "shutdown_request":
            done = {"status": "ok", "restart": bool(content.get("restart", False))}
            self.send(self.control, "shutdown_reply", done, header, idents)
            self.publish("shutdown_reply", done, header, b"kernel." + self.session.encode())
            return True
        if msg_type == "interrupt_request":
            self.interrupted = True
        reply: dict[str, Any] = {"status": "ok"}
        if msg_type == "kernel_info_request":
            reply = KERNEL_INFO
        self.send(self.control, msg_type.replace("_request", "_reply"), reply, header, idents)
        return False

    # ---- the loop ----

    def run(self) -> None:
        signal.signal(signal.SIGINT, self._on_sigint)
        poller = zmq.Poller()
        for sock in (self.control, self.hb, self.stdin):
            poller.register(sock, zmq.POLLIN)
        poller.register(self.shell, zmq.POLLIN)
        busy_until: float | None = None  # a ``sleep`` execution runs until then
        self.status("starting", {})
        while True:
            timeout = None
            if busy_until is not None:
                timeout = max(0.0, busy_until - time.monotonic()) * 1000
                timeout = min(timeout, 100.0)  # a SIGINT sets a flag; look at it soon
            ready = dict(poller.poll(None if timeout is None else int(timeout) + 1))
            if self.hb in ready:
                self.hb.send(self.hb.recv())
            if self.stdin in ready:
                self.stdin.recv_multipart()  # no input_request is ever sent: nothing to read
            if self.control in ready and self.on_control():
                self.exit()
                return
            if busy_until is not None and (self.interrupted or time.monotonic() >= busy_until):
                self.finish_execution(interrupted=self.interrupted)
                busy_until = None
                poller.register(self.shell, zmq.POLLIN)
            self.interrupted = False
            if busy_until is None and self.shell in ready:
                busy_until = self.on_shell()
                if busy_until is not None:  # busy: shell requests wait, as in a real kernel
                    poller.unregister(self.shell)

    def _on_sigint(self, signum: int, frame: object) -> None:
        self.interrupted = True

    def exit(self) -> None:
        """End after a ``shutdown_request``, as slowly as the shutdown delay says."""
        active = None
        if self.shutdown_dir:
            active = os.path.join(self.shutdown_dir, f"active-{os.getpid()}")
            open(active, "w").close()
            seen = sum(1 for n in os.listdir(self.shutdown_dir) if n.startswith("active-"))
            with open(os.path.join(self.shutdown_dir, f"seen-{os.getpid()}"), "w") as f:
                f.write(str(seen))
        if self.shutdown_delay == float("inf"):
            while True:
                time.sleep(3600)
        time.sleep(self.shutdown_delay)
        if active:
            os.unlink(active)
        # The replies go out (term waits up to each socket's linger), then the process ends
        # without the interpreter's finalisation: a kernel that costs little to end as well.
        self.ctx.destroy(linger=1000)
        os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "-f":
        print(f"usage: {argv[0]} -f CONNECTION_FILE", file=sys.stderr)
        return 2
    with open(argv[2]) as f:
        info = json.load(f)
    kernel = FakeKernel(
        info,
        shutdown_delay=float(os.environ.get("KERNEL_HUB_FAKE_SHUTDOWN_DELAY", "0")),
        shutdown_dir=os.environ.get("KERNEL_HUB_FAKE_SHUTDOWN_DIR") or None,
    )
    kernel.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
