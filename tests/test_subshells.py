"""Subshells (JEP 91) with a real ipykernel 7: a second request beside a long execution.

The kernel without subshells (xeus-python) is in ``test_thirdparty_kernels.py``, next to
the fixture that installs it.
"""

from __future__ import annotations

import asyncio

import pytest

from kernel_hub import KernelHubError

pytestmark = [pytest.mark.integration]

BUSY = 'print("go", flush=True)\nwhile True: pass'


def _text(outputs):
    return "".join(m.content.get("text", "") for m in outputs if m.header["msg_type"] == "stream")


async def _busy_main_shell(client):
    """Start an endless loop in the main shell; return its task once it runs."""
    go = asyncio.Event()

    def hook(msg):
        if msg.header["msg_type"] == "stream" and "go" in msg.content["text"]:
            go.set()

    task = asyncio.ensure_future(client.execute(BUSY, output_hook=hook, timeout=300))
    await asyncio.wait_for(go.wait(), 60)
    return task


@pytest.mark.asyncio
async def test_a_subshell_answers_while_the_main_shell_computes(kernel):
    async with kernel.client() as c:
        assert "kernel subshells" in await c.supported_features(timeout=60)
        sub = await c.create_subshell(timeout=60)
        assert await c.list_subshells(timeout=60) == [sub]
        main = await _busy_main_shell(c)
        try:
            out = []
            reply = await c.execute(
                "x = 6*7\nprint(x)", subshell_id=sub, output_hook=out.append, timeout=60
            )
            assert reply.content["status"] == "ok"
            assert _text(out) == "42\n"
            # The other shell requests go to the subshell too; the loop still runs.
            comp = await c.complete("impo", subshell_id=sub, timeout=60)
            assert comp.content["status"] == "ok"
            assert (await c.is_complete("x =", subshell_id=sub, timeout=60)).content[
                "status"
            ] == "invalid"
            assert not main.done()
        finally:
            await c.interrupt()
            reply = await asyncio.wait_for(main, 60)
        assert reply.content["ename"] == "KeyboardInterrupt"
        await c.delete_subshell(sub, timeout=60)
        assert await c.list_subshells(timeout=60) == []
        with pytest.raises(KernelHubError, match="refused delete_subshell_request"):
            await c.delete_subshell(sub, timeout=60)
        # A request to a subshell that is gone gets the kernel's error reply, not a hang.
        gone = await c.execute("1", subshell_id=sub, timeout=60)
        assert gone.content["status"] == "error"
        assert gone.content["ename"] == "UnknownSubshellError"


@pytest.mark.asyncio
async def test_blocking_client_creates_lists_uses_and_deletes_subshells(kernel):
    await asyncio.to_thread(_blocking_round, kernel)


def _blocking_round(kernel):
    with kernel.blocking_client() as c:
        c.wait_for_ready(60)
        sub = c.create_subshell(timeout=60)
        assert c.list_subshells(timeout=60) == [sub]
        out = []
        reply = c.execute("print('sub')", subshell_id=sub, output_hook=out.append, timeout=60)
        assert reply.content["status"] == "ok" and _text(out) == "sub\n"
        c.delete_subshell(sub, timeout=60)
        assert c.list_subshells(timeout=60) == []
