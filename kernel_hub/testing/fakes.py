"""A scripted kernel and transport: client logic tested without a kernel process."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..wire.connection import new_connection_info
from ..wire.session import Message, Session

__all__ = ["FakeKernel", "Responder", "ScriptedTransport", "hmac_sha256"]


def hmac_sha256(key: bytes, parts: Iterable[bytes]) -> bytes:
    """Return the signature the wire protocol gives *parts* under *key*: hex HMAC-SHA256.

    Computed with :mod:`hmac` alone, not with kernel_hub's :class:`Session`, so that a test
    can build or check signed frames independently of the code it tests.
    """
    h = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        h.update(part)
    return h.hexdigest().encode()


#: Gets each request the client sent; returns the ``(channel, message)`` pairs to deliver.
Responder = Callable[[str, Message], Iterable[tuple[str, Message]]]


class ScriptedTransport:
    """A fake transport: requests go to a *responder*, its answers come back on the loop.

    :param session: the kernel side's session (same key as the client's).
    :param responder: called with ``(channel, request)``; returns the messages to deliver.
    """

    def __init__(self, session: Session, responder: Responder) -> None:
        self.session = session
        self.responder = responder
        self.sent: list[tuple[str, Message]] = []
        self._on_message: Callable[[str, list[bytes]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<ScriptedTransport sent={len(self.sent)}>"

    def open(self, on_message: Callable[[str, list[bytes]], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message

    def send(self, channel: str, frames: list[bytes]) -> None:
        request = self.session.deserialize(frames)
        self.sent.append((channel, request))
        for out_channel, msg in self.responder(channel, request):
            self.deliver_frames(out_channel, self.session.serialize(msg))

    def deliver(self, channel: str, msg: Message) -> None:
        """Deliver *msg* to the client as if the kernel sent it on *channel*."""
        self.deliver_frames(channel, self.session.serialize(msg))

    def deliver_frames(self, channel: str, frames: list[bytes]) -> None:
        """Deliver raw *frames* (e.g. with a forged signature) on *channel*."""
        assert self._loop is not None, "transport not opened"
        self._loop.call_soon(self._dispatch, channel, list(frames))

    def _dispatch(self, channel: str, frames: list[bytes]) -> None:
        if self._on_message is not None:
            self._on_message(channel, frames)

    def close(self) -> None:
        self._on_message = None


class FakeKernel:
    """A scripted kernel answering like ipykernel: status busy/idle, replies, streams.

    ``execute`` of ``print(x)`` publishes a stream ``x``; code containing
    ``raise`` replies with an error; code ``input(p)`` asks for input.
    """

    def __init__(self) -> None:
        self.connection_info = new_connection_info()
        self.session = Session(self.connection_info["key"])
        self.execution_count = 0

    def transport(self) -> ScriptedTransport:
        return ScriptedTransport(self.session, self.respond)

    def client(self, **kwargs: Any) -> Any:
        from ..client import AsyncKernelClient

        return AsyncKernelClient(self.connection_info, transport=self.transport(), **kwargs)

    def _status(self, state: str, parent: Message) -> tuple[str, Message]:
        return ("iopub", self.session.msg("status", {"execution_state": state}, parent=parent))

    def respond(self, channel: str, req: Message) -> Iterator[tuple[str, Message]]:
        msg_type = req.header["msg_type"]
        s = self.session
        if msg_type == "input_reply":
            yield ("iopub", s.msg("stream", {"name": "stdout", "text": req.content["value"]}))
            return
        reply_type = msg_type.replace("_request", "_reply")
        yield self._status("busy", req)
        if msg_type == "execute_request":
            self.execution_count += 1
            code = req.content["code"]
            yield ("iopub", s.msg("execute_input", {"code": code}, parent=req))
            if code.startswith("print(") and code.endswith(")"):
                text = code[6:-1] + "\n"
                yield ("iopub", s.msg("stream", {"name": "stdout", "text": text}, parent=req))
            if "raise" in code:
                err = {
                    "ename": "RuntimeError",
                    "evalue": "boom",
                    "traceback": ["RuntimeError: boom"],
                }
                yield ("iopub", s.msg("error", err, parent=req))
                yield (channel, s.msg(reply_type, {"status": "error", **err}, parent=req))
            elif code.startswith("input("):
                prompt = {"prompt": code[6:-1], "password": False}
                yield ("stdin", s.msg("input_request", prompt, parent=req))
                yield (channel, s.msg(reply_type, {"status": "ok"}, parent=req))
            else:
                content = {"status": "ok", "execution_count": self.execution_count}
                yield (channel, s.msg(reply_type, content, parent=req))
        elif msg_type == "kernel_info_request":
            info = {"status": "ok", "protocol_version": "5.3", "implementation": "fake"}
            yield (channel, s.msg(reply_type, info, parent=req))
        else:
            yield (channel, s.msg(reply_type, {"status": "ok"}, parent=req))
        yield self._status("idle", req)
