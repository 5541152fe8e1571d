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

import json
import logging
import secrets
from typing import Any

import zmq
import zmq.asyncio

from kernel_hub.provider import BadSignature, Session

__all__ = ["RegistrationEndpoint"]

log = logging.getLogger("kernel_hub.slurm")


class RegistrationEndpoint:
    """A ROUTER socket on *ip* that accepts one signed registration.

    :param ip: the address to bind (one the compute nodes can reach).
    :param key: the kernel's connection key; a fresh 256-bit one by default.
    """

    def __init__(self, ip: str = "127.0.0.1", *, key: str | None = None) -> None:
        self.key = key or secrets.token_hex(32)
        # Signs and checks with the key, as every message of a kernel's own channels is.
        self._session = Session(self.key)
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

    async def receive(self) -> dict[str, Any]:
        """Wait for the first validly signed ``nanny_register``; acknowledge it; return its content.

        The content is the nanny's handshake without the key, or ``{"error": ...}``.
        """
        while True:
            frames = await self._sock.recv_multipart()
            try:
                idx = self._session.verify(frames)
            except BadSignature:
                self.bad_signatures += 1
                log.warning("%r dropped a registration with a bad signature", self)
                continue
            except ValueError:
                self.bad_signatures += 1
                log.warning("%r dropped a message that is not a Jupyter message", self)
                continue
            parts = frames[idx + 2 : idx + 6]
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
        ack = self._session.msg("nanny_registered")
        ack.parent_header, ack.idents = parent, idents
        await self._sock.send_multipart(self._session.serialize(ack))

    def close(self) -> None:
        """Close the endpoint (idempotent); a pending :meth:`receive` fails."""
        if self.closed:
            return
        self.closed = True
        self._sock.close()
        self._ctx.term()
