"""The fake kernel (kernel_hub.testing.protokernel) and its plugin: a protocol-only kernel."""

from __future__ import annotations

import hmac
import logging
import os
import runpy

import pytest
import zmq

from kernel_hub import AsyncKernelClient, KernelHub
from kernel_hub.testing import FAKE_TYPE, fake_kernel_plugin, interrupt_busy_loop, pid_alive
from kernel_hub.testing.protoplugin import PROGRAM


def hub():
    return KernelHub(plugins=[fake_kernel_plugin()], load_entrypoints=False, config={})


@pytest.mark.parametrize("key", [b"", b"a-uuid-like-key-0123", b"k" * 100])
def test_signer_is_hmac_sha256(key):
    make_signer = runpy.run_path(PROGRAM, run_name="protokernel")["make_signer"]
    parts = [b'{"msg_id":"1"}', b"{}", b"{}", b'{"code":"x"}']
    expected = hmac.new(key, b"".join(parts), "sha256").hexdigest().encode() if key else b""
    assert make_signer(key)(parts) == expected


@pytest.mark.asyncio
async def test_fake_kernel_speaks_the_protocol():
    async with hub() as h:
        kernel = await h.launch(FAKE_TYPE)
        pid, files = kernel.manager.pid, (kernel.state["connection_file"], kernel.state["log_file"])
        async with kernel.client() as client:
            info = await client.kernel_info(timeout=10)
            assert info.content["implementation"] == "kernel_hub-fake"
            outputs = []
            reply = await client.execute("hello", output_hook=outputs.append, timeout=10)
            assert reply.content["status"] == "ok"
            assert reply.content["execution_count"] == 1
            streams = [m.content["text"] for m in outputs if m.header["msg_type"] == "stream"]
            assert streams == ["hello\n"]
            # The kernel's monitor reads its own socket: it may come to the idle a moment
            # after the client did.
            assert await kernel.wait_for_execution_state("idle", timeout=10) == "idle"
            # a busy kernel is interrupted by a signal (the type's interrupt mode)...
            reply = await interrupt_busy_loop(
                client, "sleep 60 # go", timeout=10, interrupt_timeout=10
            )
            assert reply.content["ename"] == "KeyboardInterrupt"
            assert (await client.execute("pass", timeout=10)).content["execution_count"] == 3
        await kernel.shutdown()
        assert kernel.status == "DEAD"
        assert not pid_alive(pid)
        assert not any(os.path.exists(f) for f in files)


@pytest.mark.asyncio
async def test_interrupt_request_and_heartbeat_and_bad_signature():
    async with hub() as h:
        kernel = await h.launch(FAKE_TYPE)
        async with AsyncKernelClient(
            kernel.connection_info, manager=kernel.manager, interrupt_mode="message"
        ) as client:
            reply = await interrupt_busy_loop(
                client, "sleep 60 # go", timeout=10, interrupt_timeout=10
            )
            assert reply.content["ename"] == "KeyboardInterrupt"
        # the heartbeat echoes
        ping = zmq.Context.instance().socket(zmq.REQ)
        try:
            ping.connect(
                f"tcp://{kernel.connection_info['ip']}:{kernel.connection_info['hb_port']}"
            )
            ping.send(b"ping")
            assert ping.poll(10_000)
            assert ping.recv() == b"ping"
        finally:
            ping.close(0)
        # a client with the wrong key is not answered: the kernel drops its messages
        forger = await AsyncKernelClient(dict(kernel.connection_info, key="not-the-key")).connect()
        try:
            with pytest.raises(TimeoutError):
                await forger.kernel_info(timeout=0.5)
        finally:
            await forger.close()
        # ... and it still answers the right one
        async with kernel.client() as client:
            assert (await client.kernel_info(timeout=10)).content["status"] == "ok"
        await kernel.shutdown()
    assert not h.kernels


@pytest.mark.asyncio
async def test_shutdown_delay_is_honoured_and_a_stuck_kernel_is_killed(tmp_path, caplog):
    async with hub() as h:
        slow = {
            "KERNEL_HUB_FAKE_SHUTDOWN_DELAY": "0.2",
            "KERNEL_HUB_FAKE_SHUTDOWN_DIR": str(tmp_path),
        }
        polite = await h.launch(FAKE_TYPE, env=slow)
        stuck = await h.launch(FAKE_TYPE, env={"KERNEL_HUB_FAKE_SHUTDOWN_DELAY": "inf"})
        pids = [polite.manager.pid, stuck.manager.pid]
        assert await polite.shutdown(timeout=30) is True
        assert (tmp_path / f"seen-{pids[0]}").read_text() == "1"
        assert not (tmp_path / f"active-{pids[0]}").exists()
        with caplog.at_level(logging.WARNING, logger="kernel_hub"):
            assert await stuck.shutdown(timeout=0.5) is False
        assert [r.getMessage() for r in caplog.records] == [
            f"{stuck!r} did not exit within 0.5 s of shutdown_request; killed it"
        ]
        assert not any(pid_alive(pid) for pid in pids)
        assert await stuck.shutdown() is False  # shut down already: the same answer
