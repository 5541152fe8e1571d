"""The ZeroMQ transport against real sockets: fairness of the drain."""

from __future__ import annotations

import asyncio
import logging

import pytest
import zmq

from kernel_hub.wire.transport import ZMQTransport


@pytest.mark.asyncio
async def test_a_flooding_socket_yields_to_the_rest_of_the_loop():
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    transport = ZMQTransport(
        {"ip": "127.0.0.1", "shell_port": port}, identity=b"me", channels=("shell",)
    )
    loop = asyncio.get_running_loop()
    got: list[list[bytes]] = []
    seen_by_other_callback: list[int] = []
    done = asyncio.Event()

    def on_message(channel, frames):
        got.append(frames)
        if len(got) == 1:
            loop.call_soon(lambda: seen_by_other_callback.append(len(got)))
        if len(got) == 200:
            done.set()

    transport.open(on_message)
    try:
        transport.send("shell", [b"hello"])  # the ROUTER learns our identity
        assert await asyncio.to_thread(router.poll, 5000)
        router.recv_multipart()
        for i in range(200):
            router.send_multipart([b"me", b"part-a", str(i).encode()])
        await asyncio.wait_for(done.wait(), 10)
    finally:
        transport.close()
        router.close()
    assert [f[1] for f in got[:3]] == [b"0", b"1", b"2"] and got[0][0] == b"part-a"
    assert len(got) == 200
    # Another callback ran while the 200 messages were still being delivered.
    assert seen_by_other_callback and seen_by_other_callback[0] < 200


@pytest.mark.asyncio
async def test_a_callback_that_raises_does_not_stop_the_drain(caplog):
    """The fd is edge-triggered: a drain that left on an exception would never wake again."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    transport = ZMQTransport(
        {"ip": "127.0.0.1", "shell_port": port}, identity=b"me", channels=("shell",)
    )
    got: list[bytes] = []
    done = asyncio.Event()

    def on_message(channel, frames):
        if frames[0] == b"bad":
            raise TypeError("unhashable type: 'list'")
        got.append(frames[0])
        if len(got) == 100:
            done.set()

    transport.open(on_message)
    try:
        transport.send("shell", [b"hello"])  # the ROUTER learns our identity
        assert await asyncio.to_thread(router.poll, 30_000)
        router.recv_multipart()
        with caplog.at_level(logging.WARNING, "kernel_hub.transport"):
            for i in range(100):
                router.send_multipart([b"me", b"bad"])
                router.send_multipart([b"me", str(i).encode()])
            await asyncio.wait_for(done.wait(), 60)
            assert transport.callback_errors == 100
        transport.close()  # the summary of what was not reported yet
    finally:
        transport.close()
        router.close()
    assert got == [str(i).encode() for i in range(100)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "TypeError" in lines[0] and "100 in all" in lines[1], lines
