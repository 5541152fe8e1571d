"""Ask a local Docker engine what discovery needs, with the standard library only.

``kernel-hub list`` and every host's discovery run this plugin's
``find_kernel_types``. docker-py (with requests and urllib3) costs tens of
megabytes and a few hundred milliseconds to import, so discovery talks to a
local engine's unix socket directly: one ``GET /_ping`` to see whether it
answers, one ``GET /images/json`` for the labelled images. docker-py is loaded
only to launch, inspect or prune containers, or when ``DOCKER_HOST`` names a
non-unix engine (tcp, ssh), whose TLS and SSH settings docker-py handles.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any
from urllib.parse import quote

__all__ = ["DEFAULT_SOCKET", "EngineSilent", "get_json", "local_socket"]

#: Where the engine listens when ``DOCKER_HOST`` is not set.
DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineSilent(OSError):
    """The local engine's socket is missing, refuses, or does not answer in time."""


def local_socket() -> str | None:
    """Return the unix socket path of the engine to ask, or ``None`` for a non-unix engine."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return None


def get_json(
    path: str, *, sock_path: str, timeout: float, query: dict[str, Any] | None = None
) -> Any:
    """``GET`` *path* from the engine at *sock_path* and return the decoded JSON body.

    HTTP/1.0 keeps it simple: the engine closes the connection after the body.

    :raises EngineSilent: when the socket is missing, refuses, times out or
        answers with an error status; the message says which.
    """
    if query:
        path += "?" + "&".join(f"{k}={quote(json.dumps(v))}" for k, v in query.items())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(sock_path)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            raise EngineSilent(f"no answer within {timeout:g} s") from None
        except OSError as exc:
            raise EngineSilent((exc.strerror or str(exc)).lower()) from None
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise EngineSilent(f"GET {path} answered {b' '.join(status[1:]).decode() or 'nothing'}")
    text = body.decode()
    if path.startswith("/_ping"):
        return text
    return json.loads(text)
