"""No interrupt kills a starting kernel: held until it answers, then delivered (real ipykernel).

A SIGINT while ipykernel still imports is a KeyboardInterrupt that ends it (exit status
-2): what ``started.manager.interrupt()`` right after the launch did before.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest

from kernel_hub import KernelDied, LaunchError, RestartPolicy
from kernel_hub.testing import EventRecorder

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PYTHON = "ipykernel/python3"
FAST = RestartPolicy(limit=3, window=120, backoff_initial=0.1, backoff_max=0.5)


def _lines(caplog, text):
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_an_interrupt_right_after_the_launch_waits_for_the_kernel_to_answer(hub, caplog):
    caplog.set_level(logging.INFO, logger="kernel_hub")
    sent: list[asyncio.Future[bool]] = []
    launched = []

    def on_launched(started):
        launched.append(started)
        sent.append(asyncio.ensure_future(started.interrupt()))

    kernel = await hub.launch(PYTHON, on_launched=on_launched, restart=False)
    try:
        assert await sent[0] is False  # held, not sent while the kernel was importing
        assert _lines(caplog, "SIGINT held for kernel ipykernel/python3")
        assert _lines(caplog, "delivered: it has answered")
        assert await kernel.manager.is_alive()
        async with kernel.client() as c:
            assert (await c.execute("1+1", timeout=60)).content["status"] == "ok"
        # Once it has answered, a signal goes at once (and an idle ipykernel ignores it).
        assert await launched[0].interrupt() is True
        assert await kernel.manager.is_alive()
    finally:
        await kernel.shutdown()


async def test_a_held_interrupt_is_dropped_with_the_reason_when_the_start_fails(hub, caplog):
    caplog.set_level(logging.INFO, logger="kernel_hub")
    launched = []

    def on_launched(started):
        launched.append(started)
        launched.append(asyncio.ensure_future(started.interrupt()))

    # No ipykernel answers within 10 ms: the start fails, whatever the machine's load.
    with pytest.raises(LaunchError, match="did not become ready"):
        await hub.launch(PYTHON, on_launched=on_launched, restart=False, ready_timeout=0.01)
    started, first = launched
    assert await first is False
    (dropped,) = _lines(caplog, "dropped")
    assert "SIGINT held for kernel ipykernel/python3" in dropped
    assert "its start failed: kernel ipykernel/python3 did not become ready" in dropped
    with pytest.raises(KernelDied, match="SIGINT not delivered .*its start failed"):
        await started.interrupt()
    assert not await started.manager.is_alive()


async def test_kernel_interrupt_stops_a_busy_loop(hub):
    kernel = await hub.launch(PYTHON, restart=False)
    try:
        async with kernel.client() as c:
            go = asyncio.Event()

            def on_output(msg) -> None:
                # "go" itself: an interrupt at the first IOPub message (execute_input) can
                # land before the code runs, and ipykernel then drops the execute_reply.
                if msg.header["msg_type"] == "stream":
                    go.set()

            busy = asyncio.ensure_future(
                c.execute(
                    'print("go", flush=True)\nwhile True: pass', output_hook=on_output, timeout=300
                )
            )
            await asyncio.wait_for(go.wait(), 60)
            await kernel.interrupt()
            reply = await asyncio.wait_for(busy, 60)
            assert reply.content["ename"] == "KeyboardInterrupt"
    finally:
        await kernel.shutdown()


async def test_an_interrupt_during_a_restart_waits_for_the_new_process(hub, caplog):
    caplog.set_level(logging.INFO, logger="kernel_hub")
    events = EventRecorder(hub)
    kernel = await hub.launch(PYTHON, restart=FAST)
    try:
        old_pid = kernel.manager.pid
        await kernel.manager.signal(signal.SIGKILL)
        await events.wait_for("died", kernel.id, timeout=60)
        assert kernel.status == "RESTARTING"
        await kernel.interrupt(timeout=120)
        assert kernel.status == "RUNNING"
        assert _lines(caplog, "interrupt for <RunningKernel ipykernel/python3")
        assert kernel.manager.pid != old_pid and await kernel.manager.is_alive()
        assert events.kinds(kernel.id).count("restarted") == 1
        async with kernel.client() as c:
            assert (await c.execute("1+1", timeout=60)).content["status"] == "ok"
    finally:
        events.close()
        await kernel.shutdown()
    with pytest.raises(KernelDied, match="interrupt not delivered: the kernel .* was shut down"):
        await kernel.interrupt()
