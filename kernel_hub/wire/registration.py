"""The kernel registration handshake (JEP 66, protocol 5.6), launcher side.

Instead of choosing five ports for a kernel and hoping they are still free when
it binds them, the launcher binds one *registration socket* (a ROUTER on a port
the OS picks), and gives the kernel a *registration file* in place of a
connection file. The kernel binds its five channels wherever it can, connects a
DEALER to the registration socket and reports its ports in one signed frame::

    [ident, b"<IDS|MSG>", hmac(content), b'{"kernel_id": …, "shell_port": "…", …}']

The launcher answers with a signed acknowledgement in the same framing, and only
then knows the kernel's connection info. Which kernels speak it, and the quirks
of the one real peer (xeus-python 0.19), are in ``docs/kernels.md``.

One :class:`Registration` serves one kernel once; it is closed after the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

import zmq

from ..contract.errors import LaunchError
from .connection import CHANNELS
from .context import hub_context
from .session import DELIM, Session

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

__all__ = [
    "PARAM",
    "REGISTRATION_TIMEOUT",
    "TIMEOUT_PARAM",
    "Registration",
    "RegistrationError",
    "parse_report",
    "registration_timeout",
    "registration_wanted",
]

log = logging.getLogger("kernel_hub")

#: The launch param that opts a launch in (``True``) or out (``False``) of the handshake.
PARAM = "registration"
#: The launch param that sets how long to wait for the kernel's report, in seconds.
TIMEOUT_PARAM = "registration_timeout"
#: Seconds a kernel has to report its ports after it was started, unless the launch says.
REGISTRATION_TIMEOUT = 30.0
#: The first protocol version with the handshake (jupyter_client's docs, "Kernel startup
#: handshake": ``versionadded:: 5.6``; the JEP's own text says 5.5).
HANDSHAKE_VERSION = (5, 6)
#: What the acknowledgement says. The spec leaves its content to the launcher; the kernel
#: checks only its framing and signature.
ACK = b'{"status":"ok"}'


class RegistrationError(LaunchError):
    """The kernel's registration failed: it sent no report in time, or a malformed one."""


def _version(text: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return None


def registration_wanted(metadata: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Return whether a kernel is to be launched with the registration handshake.

    The launch param ``registration`` (a bool) decides when given; otherwise the
    kernel type's ``kernel_protocol_version`` (from its kernelspec, kept in the
    type's metadata) must be 5.6 or later.

    :param metadata: the kernel type's metadata.
    :param params: the launch's params.
    :raises LaunchError: when the ``registration`` param is not a bool.
    """
    wanted = params.get(PARAM)
    if wanted is not None:
        if not isinstance(wanted, bool):
            raise LaunchError(
                f"launch param {PARAM!r} must be true or false, not {wanted!r}: true launches "
                "the kernel with the registration handshake (JEP 66), false without"
            )
        return wanted
    version = _version(metadata.get("kernel_protocol_version", ""))
    return version is not None and version >= HANDSHAKE_VERSION


def registration_timeout(params: Mapping[str, Any]) -> float:
    """Return the launch's ``registration_timeout`` param, or :data:`REGISTRATION_TIMEOUT`.

    :raises LaunchError: when it is not a positive number.
    """
    value = params.get(TIMEOUT_PARAM, REGISTRATION_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise LaunchError(
            f"launch param {TIMEOUT_PARAM!r} must be a number of seconds > 0, not {value!r}"
        )
    return float(value)


def _port(report: Mapping[str, Any], name: str) -> int:
    value = report.get(name)
    if isinstance(value, bool):
        value = None
    try:
        port = int(value)  # type: ignore[arg-type]  # None and junk fail here, as they should
    except (TypeError, ValueError):
        port = 0
    if isinstance(value, float) or not 0 < port < 65536:
        raise ValueError(f"its {name!r} is {value!r}, not a port number (1-65535)")
    return port


def parse_report(content: bytes, *, kernel_id: str) -> dict[str, int]:
    """Return the five ports of a kernel's registration report, as ints.

    Ports may come as numbers or as decimal strings (the spec's own example
    sends strings).

    :raises ValueError: saying what is wrong with it.
    """
    try:
        report = json.loads(content)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"it is not JSON: {content[:80]!r}") from None
    if not isinstance(report, dict):
        raise ValueError(f"it is a JSON {type(report).__name__}, not an object")
    if report.get("kernel_id") != kernel_id:
        raise ValueError(
            f"its 'kernel_id' is {report.get('kernel_id')!r}, not this kernel's {kernel_id!r}"
        )
    ports = {f"{c}_port": _port(report, f"{c}_port") for c in CHANNELS}
    if len(set(ports.values())) != len(ports):
        raise ValueError(f"it reports the same port twice: {ports}")
    return ports


class Registration:
    """A one-shot registration socket for one kernel.

    :param kernel_id: the kernel's id, which it must echo in its report.
    :param key: the kernel's connection key: report and acknowledgement are signed with it.
    :param signature_scheme: as in the connection file.
    :param ip: where to bind; the kernel connects to it, so the kernel's own address
        (``127.0.0.1`` for a local kernel).
    :param label: how messages name the kernel (``"kernel spec/xpython"``).

    Use it as a context manager (the socket is closed on exit), or call :meth:`close`.
    """

    def __init__(
        self,
        *,
        kernel_id: str,
        key: str,
        signature_scheme: str = "hmac-sha256",
        ip: str = "127.0.0.1",
        label: str = "the kernel",
    ) -> None:
        self.kernel_id = kernel_id
        self.ip = ip
        self.label = label
        self._session = Session(key, signature_scheme)
        #: Messages dropped: unsigned, wrongly signed, or not in the report's framing.
        self.dropped = 0
        self._sock: zmq.Socket[bytes] | None = hub_context().socket(zmq.ROUTER)
        # Linger: the acknowledgement must reach the kernel after the socket is closed
        # (xeus-python aborts without one); a second at most, then it is dropped.
        self._sock.linger = 1000
        # A report is a few hundred bytes; anything far bigger is not one (as the nanny's limit).
        self._sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        host = f"[{ip}]" if ":" in ip else ip
        try:
            self._sock.bind(f"tcp://{host}:*")
        except zmq.ZMQError as exc:
            self.close()
            raise LaunchError(
                f"cannot bind a registration socket for {label} on {ip}: {exc}"
            ) from None
        endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        #: The port the OS chose for the registration socket.
        self.port = int(endpoint.rsplit(":", 1)[1])

    def __repr__(self) -> str:
        state = "OPEN" if self._sock is not None else "CLOSED"
        return f"<Registration {self.ip}:{self.port} [{state}]>"

    def __enter__(self) -> Registration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the socket (an acknowledgement sent is still delivered, within a second)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def file_info(self, info: Mapping[str, Any]) -> dict[str, Any]:
        """Return the registration file for a kernel with connection info *info* (no ports).

        The spec's fields (``kernel_id``, ``transport``, ``registration_ip``,
        ``registration_port``, ``signature_scheme``, ``key``), plus what
        xeus-python 0.19 needs besides: ``ip`` (where it binds its channels) and
        ``registration_port`` as a string.
        """
        base = {k: v for k, v in info.items() if k not in {f"{c}_port" for c in CHANNELS}}
        return {
            **base,
            "kernel_id": self.kernel_id,
            "registration_ip": self.ip,
            "registration_port": str(self.port),
        }

    async def wait(self, *, timeout: float, died: Awaitable[Any] | None = None) -> dict[str, int]:
        """Wait for the kernel's report, acknowledge it, and return its five ports.

        A message that is not signed with the kernel's key is dropped (whoever
        finds the port can neither register a kernel nor stop this one's
        start); a signed one that is not a good report fails the launch.

        :param timeout: seconds to wait for the report.
        :param died: completes when the kernel's process has ended; then this
            fails at once instead of waiting out *timeout*.
        :raises RegistrationError: no report within *timeout*, the kernel ended
            first, or its report is malformed; each names the fix.
        """
        receiving = asyncio.ensure_future(self._receive())
        watching = asyncio.ensure_future(died) if died is not None else None
        waiting = {receiving} if watching is None else {receiving, watching}
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in waiting:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        if receiving in done:
            return receiving.result()
        dropped = ""
        if self.dropped:
            dropped = f" ({self.dropped} unsigned or malformed message(s) dropped)"
        if watching is not None and watching in done:
            raise RegistrationError(
                f"{self.label} ended before it reported its ports on the registration socket"
                f"{dropped}; check the kernel type's command and that its packages are installed"
            )
        raise RegistrationError(
            f"{self.label} did not report its ports on the registration socket within "
            f"{timeout:g} s{dropped}; if it does not implement the registration handshake "
            f"(JEP 66), launch it with params={{{PARAM!r}: False}} or drop "
            "'kernel_protocol_version' from its kernelspec; if it is just slow, raise the "
            f"{TIMEOUT_PARAM!r} launch param"
        )

    async def _receive(self) -> dict[str, int]:
        while True:
            frames = await self._recv()
            try:
                idx = frames.index(DELIM)
            except ValueError:
                self._drop("a message without the <IDS|MSG> delimiter")
                continue
            if len(frames) != idx + 3:
                self._drop(f"a message of {len(frames) - idx - 1} frame(s) after the delimiter")
                continue
            signature, content = frames[idx + 1], frames[idx + 2]
            if not hmac.compare_digest(signature, self._session.sign([content])):
                self._drop("a message with a missing or wrong signature")
                continue
            try:
                ports = parse_report(content, kernel_id=self.kernel_id)
            except ValueError as exc:
                raise RegistrationError(
                    f"{self.label} sent a malformed registration report: {exc}; it does not "
                    f"follow the registration handshake (JEP 66), so launch it with "
                    f"params={{{PARAM!r}: False}} or drop 'kernel_protocol_version' from its "
                    "kernelspec"
                ) from None
            ack = [*frames[:idx], DELIM, self._session.sign([ACK]), ACK]
            assert self._sock is not None
            self._sock.send_multipart(ack, zmq.NOBLOCK)
            return ports

    def _drop(self, what: str) -> None:
        self.dropped += 1
        log.warning("registration socket of %s: dropped %s", self.label, what)

    async def _recv(self) -> list[bytes]:
        """Receive one message; the socket's fd is edge-triggered, so poll before each wait."""
        sock = self._sock
        assert sock is not None
        loop = asyncio.get_running_loop()
        fd = int(sock.getsockopt(zmq.FD))
        while True:
            if _readable(sock):
                return sock.recv_multipart(zmq.NOBLOCK)
            readable = loop.create_future()
            loop.add_reader(fd, _wake, readable)
            try:
                # Checked again now that the reader is in place: an edge before it is lost.
                if not _readable(sock):
                    await readable
            finally:
                loop.remove_reader(fd)


def _wake(readable: asyncio.Future[None]) -> None:
    if not readable.done():
        readable.set_result(None)


def _readable(sock: zmq.Socket[bytes]) -> bool:
    """Return whether a message waits (reading ZMQ_EVENTS also takes the fd's edge)."""
    return bool(int(sock.getsockopt(zmq.EVENTS)) & zmq.POLLIN)
