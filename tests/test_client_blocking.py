"""BlockingKernelClient and run_kernel with real kernels, incl. inside a running event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

import kernel_hub
from kernel_hub import BlockingKernelClient, run_kernel

pytestmark = pytest.mark.integration


def test_run_kernel_execute_interactive_prints_like_a_console(capsys):
    with run_kernel("ipykernel/python3") as client:
        assert isinstance(client, BlockingKernelClient)
        reply = client.execute_interactive("print(6*7)\n'res'", timeout=60)
        assert reply.content["status"] == "ok"
        err = client.execute_interactive("import sys; print('oops', file=sys.stderr); 1/0")
        assert err.content["ename"] == "ZeroDivisionError"
    captured = capsys.readouterr()
    assert "42\n'res'\n" in captured.out
    assert "oops" in captured.err and "ZeroDivisionError" in captured.err


def test_blocking_client_works_inside_a_running_event_loop():
    async def notebook_cell():
        # A notebook runs user code inside its loop; blocking calls must still work.
        with run_kernel() as client:
            return client.execute("1+1", timeout=60).content["status"]

    assert asyncio.run(notebook_cell()) == "ok"


@pytest.mark.asyncio
async def test_blocking_client_from_a_running_kernel_and_timeouts(hub):
    kernel = await hub.launch("ipykernel/python3")
    try:
        client = await asyncio.to_thread(kernel.blocking_client)
        try:
            assert "BlockingKernelClient" in repr(client)
            with pytest.raises(TimeoutError, match="within 0.3 s"):
                await asyncio.to_thread(client.execute, "import time; time.sleep(2)", timeout=0.3)
            await asyncio.to_thread(client.interrupt)
            info = await asyncio.to_thread(client.kernel_info, timeout=60)
            assert info.content["status"] == "ok"
        finally:
            await asyncio.to_thread(client.close)
    finally:
        await kernel.shutdown()


def test_blocking_call_from_the_private_loop_thread_is_refused():
    with run_kernel() as client:
        errors = []

        def hook(msg):
            try:
                client.kernel_info()
            except RuntimeError as exc:
                errors.append(str(exc))

        client.execute("print(1)", output_hook=hook, timeout=60)
        assert errors and "own loop thread" in errors[0]


def test_run_kernel_async_twin():
    async def main():
        async with kernel_hub.run_kernel_async() as client:
            out = []
            await client.execute("print('async')", output_hook=out.append, timeout=60)
            return out[-1].content["text"], threading.active_count()

    text, _ = asyncio.run(main())
    assert text == "async\n"
