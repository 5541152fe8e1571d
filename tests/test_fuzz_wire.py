"""Property-based fuzzing of the wire layer and the client's drain (Hypothesis).

Garbage of every kind — random frame lists, signed and unsigned messages whose
JSON parts have the wrong types, huge, empty and deeply nested frames — goes to
``Session.deserialize``, to a client through the scripted transport, and to a
client over real ZeroMQ sockets (a kernel's sockets played by the test). After
each batch the channels must still work: a real request/reply round trip and an
IOPub message arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_hub import AsyncKernelClient
from kernel_hub.testing import hmac_sha256
from kernel_hub.wire.connection import channel_url, new_connection_info
from kernel_hub.wire.session import DELIM, Message, Session

KEY = b"fuzz-key"
#: How many examples each property ran (reported by the last test of the module).
RAN: Counter[str] = Counter()


def fuzz(examples: int) -> settings:
    """Settings of every property here: *examples* examples, no database, no deadline."""
    return settings(
        max_examples=examples,
        database=None,  # nothing written to the working tree
        deadline=None,  # a loaded machine must not fail a property on time
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---- strategies ----

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
#: A value for a field the client relies on: sometimes right, mostly wrong.
field_values = st.one_of(
    st.text(max_size=12), st.just(""), json_values, st.lists(st.text(max_size=3), max_size=3)
)
MSG_TYPES = ["status", "stream", "execute_reply", "kernel_info_reply", "input_request", "error"]


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    header: dict[str, Any] = {}
    if draw(st.booleans()):
        header["msg_id"] = draw(st.one_of(st.uuids().map(lambda u: u.hex), field_values))
    if draw(st.booleans()):
        header["msg_type"] = draw(st.one_of(st.sampled_from(MSG_TYPES), field_values))
    header.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    return header


@st.composite
def parts(draw: st.DrawFn) -> list[bytes]:
    """The four JSON parts: mostly objects of plausible but wrong shape, sometimes junk."""
    header = draw(headers())
    parent: dict[str, Any] = {}
    if draw(st.booleans()):
        parent["msg_id"] = draw(field_values)
    content = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    if draw(st.booleans()):
        content["execution_state"] = draw(
            st.one_of(st.sampled_from(["idle", "busy"]), field_values)
        )
    objects: list[Any] = [header, parent, {}, content]
    encoded = [json.dumps(o).encode() for o in objects]
    for i in range(4):  # now and then a part that is not a JSON object at all
        if draw(st.integers(0, 9)) == 0:
            encoded[i] = draw(
                st.one_of(st.binary(max_size=30), json_values.map(lambda v: json.dumps(v).encode()))
            )
    return encoded


SPECIAL_FRAMES = [
    b"",
    DELIM,
    b"\xff\xfe\x00",
    b"[" * 100_000,  # nesting past the JSON parser's recursion limit
    b"x" * 5_000_000,  # a huge frame
    b"{}",
]


@st.composite
def messages(draw: st.DrawFn, key: bytes = KEY) -> list[bytes]:
    """The frames of one message: signed right, signed wrong, unsigned, cut short or extended."""
    four = draw(parts())
    if draw(st.integers(0, 19)) == 0:  # a deeply nested or huge part, properly signed
        four[draw(st.integers(0, 3))] = draw(st.sampled_from(SPECIAL_FRAMES))
    how = draw(st.sampled_from(["signed", "signed", "signed", "unsigned", "forged", "other-key"]))
    signature = {
        "signed": lambda: hmac_sha256(key, four),
        "unsigned": lambda: b"",
        "forged": lambda: draw(st.binary(max_size=64)),
        "other-key": lambda: hmac_sha256(b"not-" + key, four),
    }[how]()
    idents = draw(st.lists(st.binary(max_size=8), max_size=2))
    buffers = draw(st.lists(st.binary(max_size=16), max_size=2))
    frames = [*idents, DELIM, signature, *four, *buffers]
    if draw(st.integers(0, 9)) == 0:
        frames = frames[: draw(st.integers(0, len(frames)))]
    return frames


raw_frame_lists = st.lists(
    st.one_of(st.binary(max_size=64), st.sampled_from(SPECIAL_FRAMES)), max_size=10
)
garbage = st.one_of(messages(), raw_frame_lists)
CHANNEL_NAMES = ["shell", "control", "stdin", "iopub"]
batches = st.lists(st.tuples(st.sampled_from(CHANNEL_NAMES), garbage), min_size=1, max_size=8)


# ---- Session.deserialize ----


@fuzz(3000)
@given(frames=garbage, keyed=st.booleans())
def test_deserialize_returns_a_well_shaped_message_or_raises_value_error(frames, keyed):
    RAN["deserialize"] += 1
    session = Session(KEY if keyed else b"")
    try:
        msg = session.deserialize(frames)
    except ValueError:  # BadSignature is one
        return
    for part in (msg.header, msg.parent_header, msg.metadata, msg.content):
        assert type(part) is dict
    assert type(msg.header["msg_id"]) is str and msg.header["msg_id"]
    assert type(msg.header["msg_type"]) is str and msg.header["msg_type"]
    assert type(msg.parent_header.get("msg_id", "")) is str
    if msg.header["msg_type"] == "status":
        assert type(msg.content["execution_state"]) is str


# ---- the client's drain through the scripted transport ----


@fuzz(300)
@given(batch=batches)
def test_garbage_through_the_scripted_transport_leaves_the_client_working(batch):
    from kernel_hub.testing import FakeKernel

    RAN["scripted"] += 1

    async def scenario() -> None:
        fake = FakeKernel()
        key = fake.session.key
        async with fake.client(ready_timeout=60) as client:
            transport = client._transport
            for channel, frames in batch:
                transport.deliver_frames(channel, frames)
                # And the same garbage signed with the kernel's real key.
                if DELIM in frames and len(frames) >= frames.index(DELIM) + 6:
                    i = frames.index(DELIM)
                    resigned = list(frames)
                    resigned[i + 1] = hmac_sha256(key, list(frames[i + 2 : i + 6]))
                    transport.deliver_frames(channel, resigned)
            out: list[Message] = []
            reply = await client.execute("print(7)", output_hook=out.append, timeout=60)
            assert reply.content["status"] == "ok"
            assert [m.content.get("text") for m in out if m.header["msg_type"] == "stream"] == [
                "7\n"
            ]
            assert (await client.kernel_info(timeout=60)).content["status"] == "ok"

    asyncio.run(scenario())


# ---- the client's drain over real ZeroMQ sockets ----


class WireKernel:
    """The four sockets of a kernel, bound by the test: it sends garbage and answers requests."""

    def __init__(self) -> None:
        self.info = new_connection_info(key=KEY.decode())
        self.session = Session(KEY)
        ctx = zmq.Context.instance()
        self.sockets: dict[str, zmq.Socket[bytes]] = {}
        for channel, kind in [
            ("shell", zmq.ROUTER),
            ("control", zmq.ROUTER),
            ("stdin", zmq.ROUTER),
            ("iopub", zmq.PUB),
        ]:
            sock = ctx.socket(kind)
            sock.linger = 0
            sock.bind(channel_url(self.info, channel))
            self.sockets[channel] = sock
        self.identity: bytes | None = None

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)

    def send(self, channel: str, frames: list[bytes]) -> None:
        sock = self.sockets[channel]
        if channel == "iopub":
            sock.send_multipart(frames or [b""])
        elif self.identity is not None:  # ROUTER: address the client
            sock.send_multipart([self.identity, *frames])

    async def answer(self, channel: str, timeout: float = 60.0) -> Message:
        """Receive one request on *channel*, reply to it, publish its idle status."""
        sock = self.sockets[channel]
        assert await asyncio.to_thread(sock.poll, int(timeout * 1000)), f"no request on {channel}"
        identity, *frames = sock.recv_multipart()
        self.identity = identity
        request = self.session.deserialize(frames)
        s = self.session
        reply_type = request.header["msg_type"].replace("_request", "_reply")
        reply = s.msg(reply_type, {"status": "ok"}, parent=request)
        sock.send_multipart([identity, *s.serialize(reply)])
        idle = s.msg("status", {"execution_state": "idle"}, parent=request)
        self.sockets["iopub"].send_multipart([b"status", *s.serialize(idle)])
        return request


async def _round_trip(client: AsyncKernelClient, kernel: WireKernel, channel: str) -> None:
    """A request on *channel* answered by the test's kernel, and its IOPub status seen."""
    seen = asyncio.Event()
    remove = client.on("iopub", lambda m: seen.set())
    try:
        pending = asyncio.ensure_future(
            client.request("kernel_info_request", channel=channel, timeout=60)
        )
        await kernel.answer(channel)
        assert (await pending).content == {"status": "ok"}
        async with asyncio.timeout(60):
            await seen.wait()
    finally:
        remove()


@pytest.mark.slow
def test_garbage_over_real_sockets_leaves_every_channel_working():
    kernel = WireKernel()
    loop = asyncio.new_event_loop()
    client = AsyncKernelClient(kernel.info, ready_timeout=60)

    async def setup() -> None:
        await client.connect()
        # The shell ROUTER learns the client's identity; the IOPub subscription is live
        # once a status got through. One published before the subscription reached the
        # kernel's PUB is lost (ZeroMQ's slow joiner): ask again, as wait_for_ready does.
        seen = asyncio.Event()
        remove = client.on("iopub", lambda m: seen.set())
        try:
            for attempt in range(1, 61):
                pending = asyncio.ensure_future(
                    client.request("kernel_info_request", channel="shell", timeout=60)
                )
                await kernel.answer("shell")
                assert (await pending).content == {"status": "ok"}
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05 * attempt):
                        await seen.wait()
                if seen.is_set():
                    break
            else:
                pytest.fail("IOPub never delivered a status")
        finally:
            remove()
        await _round_trip(client, kernel, "control")

    @fuzz(200)
    @given(batch=batches)
    def run(batch: list[tuple[str, list[bytes]]]) -> None:
        RAN["real sockets"] += 1
        for channel, frames in batch:
            # The stdin ROUTER never heard from the client, so it could not address it.
            target = "shell" if channel == "stdin" else channel
            kernel.send(target, frames)
            if DELIM in frames and len(frames) >= frames.index(DELIM) + 6:
                i = frames.index(DELIM)
                resigned = list(frames)
                resigned[i + 1] = hmac_sha256(KEY, list(frames[i + 2 : i + 6]))
                kernel.send(target, resigned)
        # The garbage went first on the same sockets: the drain got past all of it.
        loop.run_until_complete(_round_trip(client, kernel, "shell"))
        loop.run_until_complete(_round_trip(client, kernel, "control"))

    try:
        loop.run_until_complete(setup())
        run()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        kernel.close()
    assert client.malformed + client.bad_signatures > 0


def test_report_examples_run():
    """Print how many examples each property ran (``pytest -s``); runs after the others."""
    print(f"fuzz examples run: {dict(RAN)}")
