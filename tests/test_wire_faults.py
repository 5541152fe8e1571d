"""Malformed, stray and flooding messages: no message, however formed, stops a channel.

Real ipykernel processes where the fault can come from a real kernel (a signed but
malformed message is sent by the kernel's own session), the scripted transport for
the pure logic next to them.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from kernel_hub.wire.session import Session

#: Run inside ipykernel: publish, signed with the kernel's key, messages whose fields
#: have the wrong types (parent msg_id a list, execution_state a list) or no msg_type,
#: then one good line.
MALFORMED_FROM_THE_KERNEL = """
k = get_ipython().kernel
s, pub = k.session, k.iopub_socket
s.send(pub, "status", {"execution_state": ["idle"]}, parent={"msg_id": ["a", "list"]})
s.send(pub, "status", {"execution_state": ["busy"]})
s.send(pub, "stream", {"name": "stdout", "text": "x"}, parent={"msg_id": {"a": 1}})
s.send(pub, {"header": {"msg_id": "m1"}, "parent_header": {}, "metadata": {}, "content": {}})
print("after")
"""


@pytest.mark.asyncio
@pytest.mark.integration
async def test_signed_malformed_messages_from_the_kernel_do_not_stop_the_channel(kernel):
    async with kernel.client() as c:
        out = []
        reply = await c.execute(MALFORMED_FROM_THE_KERNEL, output_hook=out.append, timeout=60)
        assert reply.content["status"] == "ok", reply.content
        assert "after" in "".join(m.content.get("text", "") for m in out)
        # Later requests on every channel still work.
        again = await c.execute("print(6*7)", output_hook=out.append, timeout=60)
        assert again.content["status"] == "ok"
        assert (await c.kernel_info(timeout=60)).content["status"] == "ok"
        assert (await c.complete("impo", timeout=60)).content["status"] == "ok"
        await c.interrupt()  # signal mode here: the manager; the channel is not involved
    assert c.malformed >= 3, c.drops
    assert "42" in "".join(m.content.get("text", "") for m in out)
    assert kernel.execution_state in ("idle", "busy")  # the monitor was fed no list either


# ---- the same faults through the scripted transport (pure logic) ----


def _silent_on(*msg_types):
    """Wrap the fake kernel's responder so that it does not answer *msg_types* by itself."""

    def wrap(fake):
        def respond(channel, req):
            if req.header["msg_type"] in msg_types:
                return []
            return fake.respond(channel, req)

        return respond

    return wrap


@pytest.mark.asyncio
async def test_a_reply_without_msg_type_is_not_taken_as_the_reply(fake_kernel, scripted_transport):
    from kernel_hub import AsyncKernelClient

    transport = scripted_transport(
        fake_kernel.session, _silent_on("kernel_info_request")(fake_kernel)
    )
    client = AsyncKernelClient(fake_kernel.connection_info, transport=transport)
    await client.connect()
    try:
        pending = asyncio.ensure_future(client.kernel_info(timeout=30))
        while not transport.sent:
            await asyncio.sleep(0)
        _, request = transport.sent[-1]
        s = fake_kernel.session
        typeless = s.msg("kernel_info_reply", {"status": "forged"}, parent=request)
        del typeless.header["msg_type"]
        transport.deliver("shell", typeless)
        transport.deliver("shell", s.msg("kernel_info_reply", {"status": "ok"}, parent=request))
        reply = await pending
    finally:
        await client.close()
    assert reply.content == {"status": "ok"}
    assert client.malformed == 1


@pytest.mark.asyncio
async def test_replies_to_no_request_are_counted_and_logged_once(fake_kernel, caplog):
    s = fake_kernel.session
    async with fake_kernel.client() as client:
        await client.wait_for_ready(timeout=30)
        assert client.stray_replies == 0  # readiness nudges are no strays
        transport = client._transport
        with caplog.at_level(logging.WARNING, "kernel_hub.client"):
            orphan_parent = s.msg("execute_request", {"code": "1"})
            for _ in range(500):
                transport.deliver("shell", s.msg("execute_reply", {}, parent=orphan_parent))
            transport.deliver("control", s.msg("interrupt_reply", {}))
            reply = await client.execute("print(1)", timeout=30)
    assert reply.content["status"] == "ok"
    assert client.stray_replies == 501
    lines = [r for r in caplog.records if "no request" in r.getMessage()]
    # The first at once, the rest in one summary when the client closed.
    assert len(lines) == 2, [r.getMessage() for r in lines]
    assert "500 more" in lines[1].getMessage() and "501 in all" in lines[1].getMessage()


@pytest.mark.asyncio
async def test_a_flood_of_forged_messages_is_counted_not_logged_one_by_one(fake_kernel, caplog):
    forger = Session("not-the-key")
    async with fake_kernel.client() as client:
        transport = client._transport
        with caplog.at_level(logging.WARNING, "kernel_hub.client"):
            for i in range(40_000):
                frames = forger.serialize(forger.msg("stream", {"text": str(i)}))
                transport.deliver_frames("iopub", frames)
            reply = await client.execute("print(1)", timeout=60)
    assert reply.content["status"] == "ok"
    assert client.bad_signatures == 40_000
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert 1 <= len(warnings) <= 3, len(warnings)
    assert "40000 in all" in warnings[-1].getMessage()


@pytest.mark.asyncio
async def test_execute_returns_after_its_reply_when_the_idle_status_is_lost(
    fake_kernel, scripted_transport, caplog
):
    """The kernel dropped the idle status (a full IOPub queue): a counted gap, no hang."""
    from kernel_hub import AsyncKernelClient

    def respond(channel, req):
        for out_channel, msg in fake_kernel.respond(channel, req):
            lost = msg.header["msg_type"] == "status" and msg.content["execution_state"] == "idle"
            if not (lost and req.header["msg_type"] == "execute_request"):
                yield out_channel, msg

    transport = scripted_transport(fake_kernel.session, respond)
    client = AsyncKernelClient(fake_kernel.connection_info, transport=transport)
    client.idle_grace = 0.2  # pure logic: the fake sends nothing more after the reply
    async with client:
        with caplog.at_level(logging.WARNING, "kernel_hub.client"):
            out = []
            reply = await client.execute("print(5)", output_hook=out.append, timeout=60)
            again = await client.execute("print(6)", output_hook=out.append, timeout=60)
    assert reply.content["status"] == "ok" and again.content["status"] == "ok"
    assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == ["5\n", "6\n"]
    assert client.drops.counts == {
        "executions ended without their idle status (output may be missing)": 2
    }
    gap_lines = [r for r in caplog.records if "idle status" in r.getMessage()]
    assert len(gap_lines) == 2  # the first, and the summary at close


# ---- floods into a slow consumer ----

LINES = 30_000
#: One IOPub message per line: flush=True makes ipykernel publish each print at once.
FLOOD = f"for i in range({LINES}): print(i, flush=True)"


def _slow_hook(out, per_message=0.001):
    """An output hook that takes *per_message* seconds a message (the consumer under test)."""
    import time

    def hook(msg):
        time.sleep(per_message)  # the workload: a hook this slow, not a synchronisation
        out.append(msg)

    return hook


def _lines(out):
    return "".join(m.content.get("text", "") for m in out if m.header["msg_type"] == "stream")


@pytest.mark.asyncio
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_slow_output_hook_loses_nothing_and_does_not_hang(kernel):
    async with kernel.client() as c:
        out = []
        reply = await c.execute(FLOOD, output_hook=_slow_hook(out), timeout=600)
        assert reply.content["status"] == "ok"
        assert (await c.execute("1", timeout=120)).content["status"] == "ok"
    assert _lines(out).split() == [str(i) for i in range(LINES)]
    assert c.drops.counts == {}


@pytest.mark.asyncio
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_output_a_hook_cannot_keep_up_with_is_counted_and_logged_once(kernel, caplog):
    async with kernel.client() as c:
        c.output_backlog = 200  # so that this hook does fall behind
        out = []
        with caplog.at_level(logging.WARNING, "kernel_hub.client"):
            reply = await c.execute(FLOOD, output_hook=_slow_hook(out), timeout=600)
            assert reply.content["status"] == "ok"
            assert (await c.execute("1", timeout=120)).content["status"] == "ok"
    lost = c.drops.counts["dropped output messages (an output hook fell behind)"]
    streams = [m for m in out if m.header["msg_type"] == "stream"]
    # At least one message a line (a line and its newline may come as two).
    assert lost > 0 and len(streams) + lost >= LINES, (lost, len(streams))
    lines = [r.getMessage() for r in caplog.records if "output" in r.getMessage()]
    assert len(lines) == 1 and f"{lost} of one execution" in lines[0], lines


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kernel_hub_run_into_a_stalled_pipe_neither_hangs_nor_loses_lines(tmp_path):
    """``kernel-hub run`` writes into a pipe nobody reads until the kernel is done (``| less``).

    The CLI's loop blocks on the full pipe the whole time. Before, the kernel dropped
    what no socket took (here 26,931 of 30,000 lines arrived) and the final idle status
    with it, so the CLI hung.
    """
    import subprocess
    import sys

    marker = tmp_path / "printed"
    code = f"{FLOOD}\nopen({str(marker)!r}, 'w').close()"
    err_path = tmp_path / "stderr"
    with (
        err_path.open("wb") as err,
        subprocess.Popen(
            [sys.executable, "-m", "kernel_hub", "run", "-c", code],
            stdout=subprocess.PIPE,
            stderr=err,
        ) as proc,
    ):
        assert proc.stdout is not None
        try:
            # Read nothing until the kernel has printed every line (a condition, with a
            # generous bound for a loaded machine), then everything.
            assert _wait_for_path(marker, proc, timeout=600), err_path.read_text()
            out = proc.stdout.read()
            status = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = err_path.read_text()
    assert status == 0, stderr
    assert out.split() == [str(i).encode() for i in range(LINES)], stderr[-2000:]
    assert "dropped" not in stderr and "without their idle" not in stderr


def _wait_for_path(path, proc, *, timeout):
    """Wait until *path* exists (``True``) or *proc* ended or *timeout* s passed (``False``)."""
    import time

    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > end:
            return path.exists()
        time.sleep(0.05)  # polling a condition with a bound: nothing else tells us
    return True
