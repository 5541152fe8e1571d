"""Is the kernel behind a connection file still running? Answered in seconds, not minutes.

``kernel-hub launch`` adds a ``kernel_hub`` record to the connection files it
writes (who started the kernel, when, and the kernel's pid and process token).
A launcher killed outright leaves its file behind; ``kernel-hub attach`` reads
the record and checks the pid first (instant, on this machine), then the
kernel's heartbeat (any kernel, any machine), before it waits for anything.
Jupyter clients ignore keys they do not know, so the record costs them nothing.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import TYPE_CHECKING, Any

from .procs import boot_id, pid_alive, process_token

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["RECORD_KEY", "heartbeat_answers", "launcher_record", "not_running_reason"]

#: The connection-file key of the launcher's record.
RECORD_KEY = "kernel_hub"


def launcher_record(kernel_pid: int | None, *, type_id: str, kernel_id: str) -> dict[str, Any]:
    """Return the record ``kernel-hub launch`` stores next to the connection info.

    :param kernel_pid: the kernel's pid when it runs on this machine, else ``None``.
    """
    record: dict[str, Any] = {
        "type_id": type_id,
        "kernel_id": kernel_id,
        "launcher_pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }
    if kernel_pid:
        record["kernel_pid"] = kernel_pid
        record["kernel_token"] = process_token(kernel_pid)
    return record


def heartbeat_answers(info: Mapping[str, Any], timeout: float) -> bool:
    """Ping the kernel's heartbeat socket once; return whether it echoed within *timeout* s."""
    import zmq

    from ..wire.curve import secure_client

    transport = info.get("transport", "tcp")
    ip = info.get("ip", "127.0.0.1")
    port = info.get("hb_port")
    if not port:
        return True  # no heartbeat to ask: let the real request decide
    url = f"{transport}://{ip}:{port}" if transport == "tcp" else f"{transport}://{ip}-{port}"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    try:
        secure_client(sock, info)
        sock.connect(url)
        sock.send(b"ping")
        return bool(sock.poll(int(timeout * 1000), zmq.POLLIN))
    finally:
        sock.close(0)
        ctx.term()


def _when(record: Mapping[str, Any], path: str) -> str:
    started = record.get("started")
    if not started:
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return "at an unknown time"
        started = datetime.datetime.fromtimestamp(mtime, datetime.UTC).isoformat(timespec="seconds")
    who = f"by pid {record['launcher_pid']}" if record.get("launcher_pid") else "by another process"
    return f"started {started} {who}"


def not_running_reason(
    path: str, info: Mapping[str, Any], record: Mapping[str, Any], *, timeout: float
) -> str | None:
    """Return why the kernel of *path* is not running, or ``None`` when it seems to be.

    Checks the recorded kernel pid (when it was started on this machine in this
    boot), then the heartbeat for up to *timeout* seconds.
    """
    where = f"the kernel of {path} is not running ({_when(record, path)})"
    pid = record.get("kernel_pid")
    token = str(record.get("kernel_token") or "")
    same_boot = token.split("/", 1)[0] == boot_id() if token else False
    if pid and record.get("host") == socket.gethostname() and same_boot:
        if not pid_alive(int(pid)) or process_token(int(pid)) != token:
            return f"{where}: its process {pid} is gone. Remove the file, or launch a new kernel"
    if not heartbeat_answers(info, timeout):
        return (
            f"{where}: no heartbeat from {info.get('ip', '127.0.0.1')}:{info.get('hb_port')} "
            f"within {timeout:g} s. Remove the file, or launch a new kernel "
            "(a slow remote kernel: raise --timeout)"
        )
    return None
