"""The one-shot registration endpoint a batch job's nanny dials back to.

The host chooses the kernel's key and opens a ZeroMQ ROUTER on an address the
compute nodes reach. The nanny (``nanny.py --register FILE``, see
``docs/nanny-protocol.md``) sends one ``nanny_register`` message, HMAC-signed
with that key, holding its handshake without the key; the host answers with a
signed ``nanny_registered`` and closes the endpoint. Messages with a bad
signature are dropped and counted, so another user on the network who finds
the port can neither register a kernel of their own nor learn anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import zmq
import zmq.asyncio

__all__ = ["RegistrationEndpoint"]

log = logging.getLogger("kernel_hub.slurm")

DELIM = b"<IDS|MSG>"


def _pack(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class RegistrationEndpoint:
    """A ROUTER socket on *ip* that accepts one signed registration.

    :param ip: the address to bind (one the compute nodes can reach).
    :param key: the kernel's connection key; a fresh 256-bit one by default.
    """

    def __init__(self, ip: str = "127.0.0.1", *, key: str | None = None) -> None:
        self.key = key or secrets.token_hex(32)
        self._auth = hmac.new(self.key.encode("ascii"), digestmod=hashlib.sha256)
        #: Messages dropped because their signature was missing or wrong.
        self.bad_signatures = 0
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.linger = 1000  # the acknowledgement still goes out after close()
        host = f"[{ip}]" if ":" in ip else ip
        if ":" in ip:
            self._sock.ipv6 = True
        self._sock.bind(f"tcp://{host}:0")
        self.url = str(self._sock.get_string(zmq.LAST_ENDPOINT))
        self.closed = False

    def __repr__(self) -> str:
        return f"<RegistrationEndpoint {self.url} [{'CLOSED' if self.closed else 'OPEN'}]>"

    def _sign(self, parts: list[bytes]) -> bytes:
        h = self._auth.copy()
        for p in parts:
            h.update(p)
        return h.hexdigest().encode()

    async def receive(self) -> dict[str, Any]:
        """Wait for the first validly signed ``nanny_register``; acknowledge it; return its content.

        The content is the nanny's handshake without the key, or ``{"error": ...}``.
        """
        while True:
            frames = await self._sock.recv_multipart()
            try:
                idx = frames.index(DELIM)
                signature, parts = frames[idx + 1], frames[idx + 2 : idx + 6]
                if len(parts) != 4:
                    raise ValueError("too few frames")
            except (ValueError, IndexError):
                self.bad_signatures += 1
                log.warning("%r dropped a message that is not a Jupyter message", self)
                continue
            if not hmac.compare_digest(signature, self._sign(parts)):
                self.bad_signatures += 1
                log.warning("%r dropped a registration with a bad signature", self)
                continue
            try:
                header, content = json.loads(parts[0]), json.loads(parts[3])
            except ValueError:
                self.bad_signatures += 1
                continue
            if header.get("msg_type") != "nanny_register" or not isinstance(content, dict):
                continue
            await self._ack(frames[:idx], header)
            return content

    async def _ack(self, idents: list[bytes], parent: dict[str, Any]) -> None:
        header = {
            "msg_id": uuid.uuid4().hex,
            "msg_type": "nanny_registered",
            "username": "kernel-hub",
            "session": uuid.uuid4().hex,
            "date": datetime.now(UTC).isoformat(),
            "version": "5.3",
        }
        parts = [_pack(header), _pack(parent), _pack({}), _pack({})]
        await self._sock.send_multipart([*idents, DELIM, self._sign(parts), *parts])

    def close(self) -> None:
        """Close the endpoint (idempotent); a pending :meth:`receive` fails."""
        if self.closed:
            return
        self.closed = True
        self._sock.close()
        self._ctx.term()
