"""The activity monitor with real kernels: its own status-only socket, whatever the clients do."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kernel_hub import AsyncKernelClient, KernelHub, KernelHubError

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]

PYTHON = "ipykernel/python3"


def wait_on(flag) -> str:
    """Return code that keeps the kernel busy until *flag* exists."""
    return f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.01)"


async def test_the_monitor_reads_its_own_socket_while_a_client_runs_and_after_it_closes(
    tmp_path,
):
    # No feeding and no socket hand-over (issue 21): a client changes nothing for it.
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        monitor = kernel.monitor
        assert "OPEN" in repr(monitor)
        own = monitor._sock
        flag = tmp_path / "go"
        async with kernel.client() as client:
            await client.execute("1", timeout=60)
            assert monitor._sock is own
            running = asyncio.ensure_future(client.execute(wait_on(flag), timeout=30))
            assert await kernel.wait_for_execution_state("busy", timeout=60) == "busy"
        # Closed while the kernel is busy: the monitor reads on, from the same socket.
        with contextlib.suppress(KernelHubError):
            await running
        assert "OPEN" in repr(monitor) and monitor._sock is own
        flag.touch()
        assert await kernel.wait_for_execution_state("idle", timeout=60) == "idle"


async def test_the_monitor_alone_receives_status_only_so_output_crosses_the_wire_once():
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        monitor = kernel.monitor
        # A client that is not the kernel's own (no kernel=): it never feeds the monitor.
        async with AsyncKernelClient(kernel.connection_info, manager=kernel.manager) as client:
            await client.execute("1", timeout=60)  # by now the monitor has seen a status
            await kernel.wait_for_execution_state("idle", timeout=60)
            assert "OPEN" in repr(monitor)
            assert monitor.topic is not None and monitor.topic.endswith(b".status")
            before = monitor.messages
            lines = []
            code = "for i in range(300): print(i, flush=True)"
            await client.execute(code, output_hook=lines.append, timeout=30)
            await kernel.wait_for_execution_state("idle", timeout=60)
        assert len([m for m in lines if m.header["msg_type"] == "stream"]) >= 1
        # Only the busy/idle pair (and perhaps a straggling probe status) reached the monitor.
        assert monitor.messages - before <= 4


async def test_a_client_on_another_loop_leaves_the_monitor_its_own_socket(tmp_path):
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        monitor = kernel.monitor
        client = await asyncio.to_thread(kernel.blocking_client)  # kernel_hub's loop thread
        try:
            flag = tmp_path / "go"
            running = asyncio.ensure_future(
                asyncio.to_thread(client.execute, wait_on(flag), timeout=30)
            )
            # The readiness nudges of the blocking client's first request make busy/idle pairs
            # of their own, which may still reach the monitor's socket: wait for the busy that
            # lasts (the execution's, until the flag exists).
            while True:
                assert await kernel.wait_for_execution_state("busy", timeout=60) == "busy"
                if "OPEN busy" in repr(monitor):
                    break
            flag.touch()
            await running
            assert await kernel.wait_for_execution_state("idle", timeout=60) == "idle"
        finally:
            await asyncio.to_thread(client.close)


async def test_after_a_restart_the_monitor_follows_the_new_process(tmp_path):
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        monitor = kernel.monitor
        async with kernel.client() as client:
            await client.execute("1", timeout=60)
            await kernel.restart()
            assert "OPEN" in repr(monitor)  # a socket on the new process
            await client.execute("1", timeout=60)
            flag = tmp_path / "go"
            running = asyncio.ensure_future(client.execute(wait_on(flag), timeout=30))
            assert await kernel.wait_for_execution_state("busy", timeout=60) == "busy"
            flag.touch()
            await running
            assert await kernel.wait_for_execution_state("idle", timeout=60) == "idle"
        assert "OPEN idle" in repr(monitor)


async def test_once_narrowed_the_monitor_reads_status_when_asked_not_per_message(monkeypatch):
    """A client's round trip costs the host no read of the monitor's socket (issue 21's 5 %)."""
    from kernel_hub.lifecycle import monitor as monitor_module

    monkeypatch.setattr(monitor_module, "LAZY", 3600.0)  # only a reader makes it read
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        monitor = kernel.monitor
        async with kernel.client() as client:
            await client.execute("1", timeout=60)
            assert await kernel.wait_for_execution_state("idle", timeout=60) == "idle"
            assert monitor.topic is not None  # narrowed: lazy from now on
            before = monitor.messages
            for _ in range(5):
                await client.execute("1", timeout=60)
            # The kernel's busy/idle pairs wait in the socket's queue, unread.
            assert monitor.messages == before
            # A reader on another thread does not touch the socket (not thread-safe).
            assert await asyncio.to_thread(lambda: monitor.execution_state) in ("busy", "idle")
            assert monitor.messages == before
            # A reader gets the newest state: the queue is read then, at once (the last
            # pair's may still be on its way; the four before it are in).
            assert kernel.execution_state in ("busy", "idle")
            assert monitor.messages >= before + 8
            assert await kernel.wait_for_execution_state("idle", timeout=60) == "idle"
