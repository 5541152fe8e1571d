"""AsyncKernelClient logic against the scripted fake kernel (no process); real-kernel twins
live in test_client_async.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kernel_hub import KernelHubError
from kernel_hub.contract.manager import KernelManager
from kernel_hub.wire.session import Session


@pytest.mark.asyncio
async def test_execute_collects_outputs_and_returns_reply(fake_kernel):
    outputs = []
    async with fake_kernel.client() as client:
        assert repr(client).endswith("[CONNECTED]>")
        await client.wait_for_ready(timeout=2)
        reply = await client.execute("print(42)", output_hook=outputs.append, timeout=2)
    assert reply.content["status"] == "ok"
    assert [m.header["msg_type"] for m in outputs] == ["execute_input", "stream"]
    assert outputs[1].content["text"] == "42\n"
    assert client.execution_state == "idle"
    assert repr(client).endswith("[CLOSED]>")


@pytest.mark.asyncio
async def test_stdin_hook_answers_input_request(fake_kernel):
    seen = []
    async with fake_kernel.client() as client:
        transport = client._transport

        async def answer(prompt, password):
            seen.append((prompt, password))
            return "typed"

        await client.execute("input(name?)", stdin_hook=answer, timeout=2)
        for _ in range(50):
            if any(m.header["msg_type"] == "input_reply" for _, m in transport.sent):
                break
            await asyncio.sleep(0)
    assert seen == [("name?", False)]
    replies = [m for ch, m in transport.sent if m.header["msg_type"] == "input_reply"]
    assert replies[0].content == {"value": "typed"}


@pytest.mark.asyncio
async def test_bad_signatures_are_dropped_and_counted(fake_kernel, caplog):
    forger = Session("not-the-key")
    async with fake_kernel.client() as client:
        got = []
        client.on("iopub", got.append)
        transport = client._transport
        transport.deliver_frames("iopub", forger.serialize(forger.msg("stream", {"text": "evil"})))
        transport.deliver_frames("iopub", [b"garbage"])
        with caplog.at_level(logging.WARNING, "kernel_hub.client"):
            reply = await client.execute("print(1)", timeout=2)
    assert reply.content["status"] == "ok"
    assert client.bad_signatures == 1 and client.malformed == 1
    assert all(m.content.get("text") != "evil" for m in got)
    assert "bad signature" in caplog.text


@pytest.mark.asyncio
async def test_raising_handler_does_not_stop_the_channel(fake_kernel, caplog):
    async with fake_kernel.client() as client:
        client.on("iopub", lambda m: 1 / 0)
        good = []
        client.on("iopub", good.append)
        with caplog.at_level(logging.ERROR):
            reply = await client.execute("print(1)", timeout=2)
    assert reply.content["status"] == "ok" and good
    assert "ZeroDivisionError" in caplog.text


@pytest.mark.asyncio
async def test_timeout_names_the_missing_reply(fake_kernel):
    fake_kernel.respond = lambda channel, req: iter(())  # a kernel that never answers
    client = await fake_kernel.client().connect()
    try:
        with pytest.raises(TimeoutError, match="no complete_reply from the kernel within 0.05 s"):
            await client.complete("x", timeout=0.05)
        assert not client._pending
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_async_with_waits_for_ready_and_times_out_clearly(fake_kernel):
    fake_kernel.respond = lambda channel, req: iter(())
    with pytest.raises(TimeoutError, match="kernel_info_reply"):
        async with fake_kernel.client(ready_timeout=0.05):
            pass


@pytest.mark.asyncio
async def test_close_fails_waiting_requests_and_refuses_reuse(fake_kernel):
    fake_kernel.respond = lambda channel, req: iter(())
    client = await fake_kernel.client().connect()
    waiting = asyncio.ensure_future(client.kernel_info())
    await asyncio.sleep(0)
    await client.close()
    with pytest.raises(KernelHubError, match="closed while waiting"):
        await waiting
    with pytest.raises(KernelHubError, match="is closed"):
        await client.connect()


@pytest.mark.asyncio
async def test_signal_interrupt_without_manager_is_a_clear_error(fake_kernel):
    async with fake_kernel.client() as client:
        with pytest.raises(KernelHubError, match="no manager"):
            await client.interrupt()


@pytest.mark.asyncio
async def test_message_interrupt_goes_to_control(fake_kernel):
    async with fake_kernel.client(interrupt_mode="message") as client:
        await client.interrupt(timeout=2)
        assert client._transport.sent[-1][0] == "control"
        assert client._transport.sent[-1][1].header["msg_type"] == "interrupt_request"


class _BrokenWaitManager(KernelManager):
    """A manager whose wait() fails (an unreachable nanny, say); nothing else is used."""

    def __init__(self) -> None:
        self.type_id = "fake/broken"

    async def wait(self) -> int | None:
        raise KernelHubError("the nanny link broke")

    async def is_alive(self) -> bool:
        return True

    async def signal(self, signum: int) -> None: ...

    async def kill(self) -> None: ...

    async def cleanup(self) -> None: ...

    def describe(self) -> dict:
        return {}


@pytest.mark.asyncio
async def test_a_failing_manager_wait_is_logged_and_close_still_closes(fake_kernel, caplog):
    # The client's death watch awaits manager.wait(); its failure is no death, and close()
    # must neither raise it nor leave the channels open.
    client = fake_kernel.client(manager=_BrokenWaitManager())
    with caplog.at_level(logging.WARNING, "kernel_hub.client"):
        async with client:
            reply = await client.execute("print(1)", timeout=2)
            assert reply.content["status"] == "ok"  # requests still work
    assert repr(client).endswith("[CLOSED]>")
    assert "wait() failed" in caplog.text and "the nanny link broke" in caplog.text


@pytest.mark.asyncio
async def test_an_execution_idle_without_its_reply_fails_after_the_grace_not_never():
    """ipykernel drops the reply when an interrupt lands just before the code runs."""
    from kernel_hub import KernelHubError
    from kernel_hub.client._execution import Execution
    from kernel_hub.wire.session import Session

    loop = asyncio.get_running_loop()
    lost = Execution(loop, None, None, idle_grace=0.05)
    lost.got_idle()
    with pytest.raises(KernelHubError, match="without an execute_reply"):
        await asyncio.wait_for(lost.done, 30)
    reply = Session(b"").msg("execute_reply", {"status": "ok"})
    late = Execution(loop, None, None, idle_grace=30)
    late.got_idle()
    late.got_reply(reply)  # the reply after the idle status, within the grace: fine
    assert await asyncio.wait_for(late.done, 30) is reply


@pytest.mark.asyncio
async def test_a_kernel_that_greets_is_awaited_without_nudges(fake_kernel):
    """After its iopub_welcome, a new process of the kernel is awaited for its welcome alone."""
    async with fake_kernel.client() as client:
        transport = client._transport
        welcome = fake_kernel.session.msg("iopub_welcome", {"subscription": ""})
        client.forget_iopub()  # as after a death: the next process must deliver first
        transport.deliver_frames("iopub", fake_kernel.session.serialize(welcome))
        await asyncio.sleep(0)  # the fake delivers on the next turn of the loop
        assert client.welcomes
        client.forget_iopub()
        before = len(transport.sent)
        running = asyncio.ensure_future(client.execute("print(1)", timeout=5))
        for _ in range(20):
            await asyncio.sleep(0)  # let execute reach its wait for IOPub
        assert not running.done() and len(transport.sent) == before  # no nudge, no request
        transport.deliver_frames(
            "iopub", fake_kernel.session.serialize(fake_kernel.session.msg("iopub_welcome", {}))
        )
        assert (await running).content["status"] == "ok"
        assert client.iopub_nudges == 0
        assert [m.header["msg_type"] for _, m in transport.sent[before:]] == ["execute_request"]
