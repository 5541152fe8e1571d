"""The connection to the Docker engine: one docker-py client per engine address, checked fast.

docker-py is blocking; callers run these functions through :func:`asyncio.to_thread`.
A client is made with a short timeout so that a dead engine is noticed in
seconds (``kernel-hub list`` must not hang), then the timeout is raised for
ordinary calls.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import threading
import warnings
from typing import TYPE_CHECKING

from kernel_hub.provider import LaunchError

if TYPE_CHECKING:
    from collections.abc import Iterator

    import docker

__all__ = [
    "API_TIMEOUT",
    "PING_TIMEOUT",
    "EngineUnavailable",
    "engine_address",
    "engine_help",
    "engine_errors",
    "forget_client",
    "get_client",
]

#: Seconds to wait for the engine's first answer before declaring it down.
PING_TIMEOUT = 3.0
#: Seconds for ordinary API calls once the engine answered (per read while streaming a pull).
API_TIMEOUT = 60.0

#: HTTP connections kept per engine (docker-py's default is 10).
POOL_SIZE = 128

_clients: dict[str, docker.DockerClient] = {}
_lock = threading.Lock()


class EngineUnavailable(LaunchError):
    """The Docker engine did not answer; the message says how to start it."""


def engine_address() -> str:
    """Return the engine address this process talks to (``DOCKER_HOST`` or the default socket)."""
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock (default)"


def engine_help() -> str:
    """Return what to do when the engine does not answer."""
    return (
        "Start the Docker engine ('sudo systemctl start docker', or run 'dockerd' in the "
        "background), or point DOCKER_HOST at a running one; 'docker info' must answer."
    )


def get_client(*, ping_timeout: float = PING_TIMEOUT) -> docker.DockerClient:
    """Return a docker-py client for the current ``DOCKER_HOST``, connecting on first use.

    Blocking; at most *ping_timeout* seconds when the engine is down.

    :raises EngineUnavailable: naming the engine address and how to start it.
    """
    import docker
    from docker.errors import DockerException

    key = os.environ.get("DOCKER_HOST", "")
    with _lock:
        client = _clients.get(key)
    if client is not None:
        return client
    _probe_unix_socket(key, ping_timeout)
    reason = ""
    try:
        # version=None makes docker-py ask the engine for its API version: that is the ping.
        # Each running kernel's exit watcher holds one connection (a blocked wait call), so the
        # pool is sized for many kernels, not docker-py's default of 10.
        # The timeout goes to requests, which takes seconds as a float (types-docker says int).
        client = docker.from_env(
            timeout=ping_timeout,  # type: ignore[arg-type]
            max_pool_size=POOL_SIZE,
        )
    except DockerException as exc:
        reason = _reason(exc)
    if client is None:
        _collect_failed_socket()
        raise EngineUnavailable(
            f"the Docker engine at {engine_address()} is not reachable ({reason}). " + engine_help()
        )
    client.api.timeout = API_TIMEOUT  # type: ignore[assignment]  # a float too, as above
    with _lock:
        # Another thread may have connected meanwhile; keep one client per address.
        return _clients.setdefault(key, client)


def _probe_unix_socket(docker_host: str, timeout: float) -> None:
    """Connect to an explicit ``unix://`` DOCKER_HOST once, closing the socket whatever happens.

    docker-py leaks the socket of a failed unix connect (a ResourceWarning later);
    probing first avoids that and gives the plain OS reason.
    """
    if not docker_host.startswith("unix://"):
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(docker_host[len("unix://") :])
    except OSError as exc:
        raise EngineUnavailable(
            f"the Docker engine at {docker_host} is not reachable "
            f"({(exc.strerror or str(exc)).lower()}). " + engine_help()
        ) from None
    finally:
        sock.close()


def _collect_failed_socket() -> None:
    # The default or context address failed inside docker-py, which leaves that socket to
    # the garbage collector: finalise it now, quietly, instead of as a stray ResourceWarning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def forget_client() -> None:
    """Drop the cached client of the current ``DOCKER_HOST`` (after the engine went away)."""
    with _lock:
        client = _clients.pop(os.environ.get("DOCKER_HOST", ""), None)
    if client is not None:
        client.close()


def _reason(exc: BaseException) -> str:
    # docker-py wraps the requests error several times; the innermost cause is the readable one.
    text = str(exc)
    for marker in ("Connection refused", "No such file or directory", "timed out", "Permission"):
        if marker in text:
            return marker.lower()
    return text if len(text) < 200 else text[:200] + "…"


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Turn a lost engine connection inside the block into :class:`EngineUnavailable`.

    The cached client is dropped, so the next call reconnects (and pings) afresh.
    """
    import requests

    try:
        yield
    except requests.exceptions.ConnectionError as exc:
        forget_client()
        raise EngineUnavailable(
            f"lost the Docker engine at {engine_address()} ({_reason(exc)}). " + engine_help()
        ) from None
