"""Sniffer: what anyone on the network reads of a kernel without its Curve keys.

A keyless ZeroMQ SUB on the kernel's IOPub port and a keyless DEALER on its shell
port, each watched by a socket monitor. Whether ZeroMQ's handshake with the
kernel succeeded is an event to wait for (``HANDSHAKE_SUCCEEDED`` against a plain
kernel, ``HANDSHAKE_FAILED_*`` against a CurveZMQ server), so a test that proves
"nothing readable" waits for the failure instead of for a quiet moment.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Sniffer"]


class Sniffer:
    """A keyless SUB (IOPub) and DEALER (shell) on a kernel's ports; close it when done.

    :param info: the kernel's connection info (only ``ip`` and the ports are used;
        give ``ip`` to sniff where the ports are published, e.g. a container's).
    :param server_key: a Curve server key to use instead of none (a wrong one, to
        check that it is refused).
    """

    def __init__(self, info: Mapping[str, Any], *, server_key: bytes | None = None) -> None:
        import zmq

        from ..wire.connection import channel_url

        self._zmq = zmq
        self.ctx: Any = zmq.Context()
        self.sockets: dict[str, Any] = {}
        self.monitors: dict[str, Any] = {}
        for channel, kind in (("iopub", zmq.SUB), ("shell", zmq.DEALER)):
            sock = self.ctx.socket(kind)
            sock.linger = 0
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            if server_key is not None:
                public, secret = zmq.curve_keypair()
                sock.curve_secretkey = secret
                sock.curve_publickey = public
                sock.curve_serverkey = server_key
            self.monitors[channel] = sock.get_monitor_socket()
            sock.connect(channel_url(info, channel))
            self.sockets[channel] = sock

    def __repr__(self) -> str:
        return f"<Sniffer [{'OPEN' if self.sockets else 'CLOSED'}]>"

    def handshake(self, channel: str, *, timeout: float = 60.0) -> bool:
        """Wait for the ZeroMQ handshake on *channel*; return whether it succeeded.

        :raises TimeoutError: when neither success nor failure came within *timeout* s.
        """
        from zmq.utils.monitor import recv_monitor_message

        zmq = self._zmq
        failed = (
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
        )
        mon = self.monitors[channel]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not mon.poll(left * 1000):
                break
            event = recv_monitor_message(mon)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                return True
            if event & failed:
                return False
        raise TimeoutError(f"no ZeroMQ handshake on {channel} within {timeout} s")

    def received(self, channel: str = "iopub", *, wait: float = 0.0) -> list[list[bytes]]:
        """Return the messages queued on *channel* (waiting up to *wait* s for the first)."""
        sock = self.sockets[channel]
        out: list[list[bytes]] = []
        if wait and not sock.poll(wait * 1000):
            return out
        while sock.poll(0):
            out.append(sock.recv_multipart())
        return out

    def ask_kernel_info(self, key: str) -> None:
        """Send a ``kernel_info_request`` on shell, signed with *key* (the sniffer knows it).

        Signing is not encryption: knowing the HMAC key must not be enough.
        """
        import json
        import uuid

        from .fakes import hmac_sha256

        header = {
            "msg_id": uuid.uuid4().hex,
            "session": uuid.uuid4().hex,
            "username": "sniffer",
            "msg_type": "kernel_info_request",
            "version": "5.3",
            "date": "2026-01-01T00:00:00Z",
        }
        parts = [json.dumps(header).encode(), b"{}", b"{}", b"{}"]
        signature = hmac_sha256(key.encode(), parts)
        self.sockets["shell"].send_multipart([b"<IDS|MSG>", signature, *parts], self._zmq.NOBLOCK)

    def close(self) -> None:
        """Close the sockets, their monitors and the context."""
        for sock in (*self.monitors.values(), *self.sockets.values()):
            sock.close(linger=0)
        self.sockets.clear()
        self.monitors.clear()
        self.ctx.term()
