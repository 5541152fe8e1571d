"""AsyncKernelClient against real ipykernel processes."""

from __future__ import annotations

import asyncio
import signal

import pytest

from kernel_hub import KernelDied

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

BUSY = 'import sys; print("go", flush=True)\nwhile True: pass'


async def start_busy_loop(client):
    """Start an endless loop; return (task, event set once the loop runs)."""
    started = asyncio.Event()

    def hook(msg):
        if msg.header["msg_type"] == "stream" and "go" in msg.content["text"]:
            started.set()

    task = asyncio.ensure_future(client.execute(BUSY, output_hook=hook, timeout=120))
    await asyncio.wait_for(started.wait(), 60)
    return task


async def test_requests_round_trip(kernel):
    async with kernel.client() as c:
        outputs = []
        reply = await c.execute("x = 6*7\nprint(x)\nx", output_hook=outputs.append, timeout=60)
        assert reply.content["status"] == "ok"
        types = [m.header["msg_type"] for m in outputs]
        assert types == ["execute_input", "stream", "execute_result"]
        assert outputs[2].content["data"]["text/plain"] == "42"
        info = await c.kernel_info(timeout=60)
        assert info.content["language_info"]["name"] == "python"
        comp = await c.complete("impo", timeout=60)
        # IPython's jedi completion may time out on a loaded machine and answer []: our
        # concern is the request/reply plumbing, so check the reply, not jedi.
        assert comp.content["status"] == "ok" and comp.content["cursor_end"] == 4
        assert isinstance(comp.content["matches"], list)
        insp = await c.inspect("len", timeout=60)
        assert insp.content["found"] is True
        assert (await c.is_complete("for i in x:", timeout=60)).content["status"] == "incomplete"
        hist = await c.history(timeout=60)
        assert any("6*7" in entry[2] for entry in hist.content["history"])
        assert (await c.comm_info(timeout=60)).content["status"] == "ok"
        err = await c.execute("1/0", timeout=60)
        assert err.content["status"] == "error" and err.content["ename"] == "ZeroDivisionError"


async def test_stdin_hook(kernel):
    async with kernel.client() as c:
        outputs = []
        reply = await c.execute(
            "print(input('name? ') + '!')",
            stdin_hook=lambda prompt, password: f"ada<{prompt}>",
            output_hook=outputs.append,
            timeout=60,
        )
    assert reply.content["status"] == "ok"
    assert "ada<name? >!" in "".join(m.content.get("text", "") for m in outputs)


async def test_interrupt_busy_loop_by_signal(kernel):
    assert kernel.kernel_type.interrupt_mode == "signal"
    async with kernel.client() as c:
        task = await start_busy_loop(c)
        await c.interrupt()
        # Not a timing claim (bench/ measures that): a loaded machine may take seconds.
        reply = await asyncio.wait_for(task, 60)
        assert reply.content["ename"] == "KeyboardInterrupt"
        assert (await c.execute("1+1", timeout=60)).content["status"] == "ok"


async def test_per_channel_handlers_see_every_iopub_message(kernel):
    async with kernel.client() as c:
        seen = []
        remove = c.on("iopub", seen.append)
        reply = await c.execute("print(1)", timeout=60)
        remove()
        n = len(seen)
        await c.execute("print(2)", timeout=60)
    mine = [m for m in seen if m.parent_header.get("msg_id") == reply.parent_header["msg_id"]]
    states = [m.content.get("execution_state") for m in mine]
    types = [m.header["msg_type"] for m in mine]
    assert types == ["status", "execute_input", "stream", "status"]
    assert states == ["busy", None, None, "idle"]
    assert len(seen) == n


async def test_requests_fail_fast_when_the_kernel_dies(kernel):
    async with kernel.client() as c:
        task = await start_busy_loop(c)
        await kernel.manager.signal(signal.SIGKILL)
        with pytest.raises(KernelDied, match="exit status -9"):
            await asyncio.wait_for(task, 60)


async def test_shutdown_ends_the_process(kernel):
    async with kernel.client() as c:
        await c.shutdown(timeout=60)
    assert await kernel.manager.is_alive() is False
    assert kernel.manager.exit_status == 0


async def test_wrong_key_client_gets_nothing_and_the_kernel_is_unaffected(kernel):
    from kernel_hub import AsyncKernelClient

    forged = dict(kernel.connection_info, key="0" * 64)
    intruder = await AsyncKernelClient(forged).connect()
    try:
        with pytest.raises(TimeoutError):
            await intruder.execute("import os; os._exit(1)", timeout=1.0)
        # The kernel's own (validly signed) IOPub traffic fails our wrong-key check: counted.
        async with kernel.client() as c:
            assert (await c.execute("1+1", timeout=60)).content["status"] == "ok"
        assert intruder.bad_signatures > 0
    finally:
        await intruder.close()
    assert await kernel.manager.is_alive()


async def test_execute_right_after_a_bare_connect_loses_no_output(kernel):
    from kernel_hub import AsyncKernelClient

    for _ in range(3):  # a fresh SUB socket each time; its subscription lands late
        client = await AsyncKernelClient(kernel.connection_info).connect()
        try:
            out = []
            reply = await client.execute("print('here')", output_hook=out.append, timeout=60)
        finally:
            await client.close()
        assert reply.content["status"] == "ok"
        assert [m.content.get("text") for m in out if m.header["msg_type"] == "stream"] == [
            "here\n"
        ]


async def test_the_first_execution_after_a_restart_loses_no_output(hub):
    """The same sockets reach the restarted process: the client waits for its IOPub again."""
    from kernel_hub import RestartPolicy
    from kernel_hub.testing import EventRecorder

    events = EventRecorder(hub)
    kernel = await hub.launch("ipykernel/python3", restart=RestartPolicy(limit=2, window=120))
    try:
        async with kernel.client() as c:
            await kernel.manager.signal(signal.SIGKILL)
            await events.wait_for("restarted", kernel.id, timeout=120)
            out = []
            reply = await c.execute("print('after')", output_hook=out.append, timeout=120)
            assert reply.content["status"] == "ok"
            assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == [
                "after\n"
            ]
    finally:
        events.close()
        await kernel.shutdown()
