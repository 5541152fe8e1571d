"""Test kit of the Jupyter bridge: a real ``jupyter server`` (or ``jupyter lab``) on loopback.

Used by the plugin's tests and benchmark; usable by anyone who tests a
kernel_hub type under Jupyter (``pip install 'kernel-hub-jupyter[testing]'``,
which installs this distribution, ``kernel-hub-jupyter-testing``):

.. code-block:: python

    with JupyterServer.start(tmp_path, jupyter_path=...) as server:
        kernel = server.api("POST", "/api/kernels", {"name": "kh-ipykernel-python3"})
        with server.websocket(kernel["id"]) as ws:
            ws.execute("print(1)")

It listens on 127.0.0.1 with a random token, and has a private runtime,
config and data dir, so its connection files can be checked for leftovers.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kernel_hub.testing import free_ports, processes_running

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

__all__ = ["JupyterServer", "KernelSocket", "kernel_pids"]


def _listening(port: int, deadline: float, proc: subprocess.Popen[str]) -> bool:
    """Wait until *port* accepts connections, or *proc* exits, or *deadline* passes.

    jupyter_server logs its URL one loop iteration before it binds the port, and
    logs nothing once bound: so the last step is a bounded connection retry.
    """
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def kernel_pids(kernel_id: str) -> list[int]:
    """Return the pids of live local processes whose command line names *kernel_id*."""
    return [pid for pid, _ in processes_running(kernel_id)]


@dataclass
class JupyterServer:
    """A ``jupyter server`` / ``jupyter lab`` process on 127.0.0.1 with a random token."""

    proc: subprocess.Popen[str]
    port: int
    token: str
    runtime_dir: Path
    log: list[str] = field(default_factory=list)
    _drain: threading.Thread | None = None

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        app: str = "jupyter_server",
        jupyter_path: str | None = None,
        args: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> JupyterServer:
        """Start the server in *workdir* and return once it serves HTTP.

        :param app: the module run with ``python -m`` (``jupyter_server`` or ``jupyterlab``).
        :param jupyter_path: prepended to ``JUPYTER_PATH`` (where bridged kernelspecs are).
        :param args: more ``--Class.trait=value`` options.
        :raises RuntimeError: with the server's log when it does not come up in time.
        """
        (port,) = free_ports(1)
        token = secrets.token_hex(24)
        for sub in ("root", "runtime", "config", "data"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "JUPYTER_RUNTIME_DIR": str(workdir / "runtime"),
            "JUPYTER_CONFIG_DIR": str(workdir / "config"),
            "JUPYTER_DATA_DIR": str(workdir / "data"),
            "JUPYTER_PLATFORM_DIRS": "1",
        }
        if jupyter_path:
            env["JUPYTER_PATH"] = os.pathsep.join(
                p for p in (jupyter_path, os.environ.get("JUPYTER_PATH")) if p
            )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                app,
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={port}",
                "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={workdir / 'root'}",
                f"--IdentityProvider.token={token}",
                *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
                *args,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = cls(proc, port, token, workdir / "runtime")
        up = threading.Event()
        url = f"http://127.0.0.1:{port}/"

        def drain() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                server.log.append(line)
                if url in line:
                    up.set()
            up.set()  # it exited: stop waiting

        server._drain = threading.Thread(target=drain, name="jupyter-server-log", daemon=True)
        server._drain.start()
        deadline = time.monotonic() + timeout
        if not up.wait(timeout) or not _listening(port, deadline, proc):
            server.stop()
            raise RuntimeError(f"{app} did not start on {url}:\n{''.join(server.log[-40:])}")
        return server

    def __enter__(self) -> JupyterServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 120.0) -> Any:
        """Call the REST API; return the decoded JSON (``None`` for an empty body).

        :raises urllib.error.HTTPError: for an error status.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            # An HTTPError holds the response's socket open until collected: read and close it.
            with exc:
                detail = exc.read()[:300]
            raise urllib.error.HTTPError(
                exc.url, exc.code, f"{exc.reason}: {detail!r}", exc.headers, None
            ) from None
        return json.loads(raw) if raw else None

    @contextmanager
    def websocket(self, kernel_id: str, *, timeout: float = 120.0) -> Iterator[KernelSocket]:
        """Open the kernel's ``/channels`` websocket (JSON messages, as JupyterLab's v1 default)."""
        import websocket  # websocket-client, a test dependency

        session = uuid.uuid4().hex
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels?session_id={session}",
            header=[f"Authorization: token {self.token}"],
            timeout=timeout,
        )
        try:
            yield KernelSocket(ws, session)
        finally:
            ws.close()

    def stop(self) -> None:
        """Stop the server politely (SIGINT twice is jupyter's "really quit"), else kill it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if self._drain is not None:
            self._drain.join(30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def wait_kernel_gone(self, kernel_id: str, timeout: float = 120.0) -> bool:
        """Wait until the REST API no longer knows *kernel_id*; return whether it happened.

        jupyter_server announces a finished shutdown (culling, a dead kernel) by
        no event a client can wait on, so this asks the API until the deadline.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/api/kernels/{kernel_id}")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return True
                raise
            time.sleep(0.1)
        return False

    def kernel_files(self) -> list[Path]:
        """Kernel connection files left in the server's runtime dir."""
        return sorted(self.runtime_dir.glob("kernel-*.json"))

    def wait_kernel_files_gone(self, timeout: float = 60.0) -> list[Path]:
        """Wait until no kernel connection file is left; return those still there at *timeout*.

        After the server is killed, kernel_hub's reaper removes the files a
        moment after it has killed the kernels, and says so by no event a test
        can wait on, so this looks again until the deadline.
        """
        deadline = time.monotonic() + timeout
        while (left := self.kernel_files()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return left


class KernelSocket:
    """Jupyter messages over one kernel websocket."""

    def __init__(self, ws: Any, session: str) -> None:
        self.ws = ws
        self.session = session

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        """Send a request; return its msg_id."""
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": msg_type,
                        "username": "test",
                        "session": self.session,
                        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": content,
                    "channel": channel,
                    "buffers": [],
                }
            )
        )
        return msg_id

    def execute(self, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Run *code*; return its execute_reply content and its IOPub messages, in order.

        Waits for the reply and for the ``idle`` status of the request, so every
        output has arrived (the websocket's own receive timeout bounds the wait).
        """
        msg_id = self.send("execute_request", {"code": code, "silent": False})
        reply: dict[str, Any] | None = None
        iopub: list[dict[str, Any]] = []
        idle = False
        while reply is None or not idle:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["channel"] == "shell" and msg["msg_type"] == "execute_reply":
                reply = msg["content"]
            elif msg["channel"] == "iopub":
                iopub.append(msg)
                idle = (
                    idle
                    or msg["msg_type"] == "status"
                    and (msg["content"]["execution_state"] == "idle")
                )
        return reply, iopub

    def wait_stream(self, msg_id: str) -> str:
        """Return the first stream output of request *msg_id* (its code has begun to run).

        Interrupt only after this: ipykernel ignores SIGINT between its ``busy``
        status and the start of the user's code.
        """
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("parent_header", {}).get("msg_id") == msg_id and msg["msg_type"] == "stream":
                return str(msg["content"]["text"])

    def reply_to(self, msg_id: str) -> dict[str, Any]:
        """Return the shell reply to *msg_id*."""
        while True:
            msg = json.loads(self.ws.recv())
            if msg["channel"] == "shell" and msg["parent_header"].get("msg_id") == msg_id:
                return msg
