"""``hub.launch(..., nanny=True)``: a core launch mode for any local (argv) kernel type."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kernel_hub import KernelHub, LaunchError, NannyManager
from kernel_hub.testing import wait_pid_gone

TIMEOUT = 60

ATTACH = """
import asyncio, json, sys
from kernel_hub import KernelHub

async def main():
    saved = json.loads(sys.stdin.read())
    hub = KernelHub(config={})
    kernel = await hub.attach(**saved)
    async with kernel.client() as client:
        reply = await client.execute("import os; os.getpid()", timeout=60)
    print(json.dumps({"manager": type(kernel.manager).__name__,
                      "status": reply.content["status"]}))
    await kernel.shutdown()  # through the nanny: the kernel, its files and the nanny end

asyncio.run(main())
"""


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_local_type_runs_under_a_nanny_and_another_process_shuts_it_down():
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch("ipykernel/python3", nanny=True, restart=False)
        assert isinstance(kernel.manager, NannyManager)
        described = kernel.describe()
        assert described["nanny"] is True and described["plugin"] == "ipykernel"
        assert described["state"]["launch_mode"] == "nanny"
        nanny_pid = kernel.state["nanny_pid"]
        kernel_pid = kernel.state["kernel_pid"]
        async with kernel.client() as client:
            reply = await client.execute("x = 1", timeout=TIMEOUT)
            assert reply.content["status"] == "ok"
        described.pop("kernel_id")
        res = subprocess.run(
            [sys.executable, "-c", ATTACH],
            input=json.dumps(described),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout) == {"manager": "NannyManager", "status": "ok"}
        # The other process's shutdown ended the kernel: this hub sees the death.
        await kernel.wait()
        assert kernel.status == "DEAD"
    assert wait_pid_gone(kernel_pid, TIMEOUT) and wait_pid_gone(nanny_pid, TIMEOUT)


@pytest.mark.asyncio
async def test_a_type_without_argv_cannot_run_under_a_nanny():
    from kernel_hub import KernelType, hookimpl

    class NoArgv:
        name = "noargv"

        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            return [KernelType("noargv", "k")]

    hub = KernelHub(plugins=[NoArgv], load_entrypoints=False, config={})
    with pytest.raises(LaunchError, match="has no argv, so it cannot run under a local nanny"):
        await hub.launch("noargv/k", nanny=True)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_nanny_kernel_relaunched_keeps_ports_and_key_and_its_client():
    """A relaunch under a nanny (a new nanny): the same kernel ports and key (issue 21)."""
    import os
    import signal

    from kernel_hub import RestartPolicy
    from kernel_hub.testing import EventRecorder

    fast = RestartPolicy(limit=3, window=60, backoff_initial=0.1, backoff_max=1)
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch("ipykernel/python3", nanny=True, restart=fast)
        ports = [f"{c}_port" for c in ("shell", "iopub", "stdin", "control", "hb")]
        before = {k: kernel.connection_info[k] for k in [*ports, "ip", "key"]}
        async with kernel.client() as client:
            await client.execute("x = 1", timeout=60)
            os.kill(kernel.state["kernel_pid"], signal.SIGKILL)
            await rec.wait_for("restarted", kernel.id, timeout=TIMEOUT)
            assert {k: kernel.connection_info[k] for k in before} == before
            # The new nanny got the old key on its stdin: its environment never held it.
            with open(f"/proc/{kernel.state['nanny_pid']}/environ", "rb") as f:
                environ = f.read()
            assert before["key"].encode() not in environ
            assert b"KERNEL_HUB_NANNY_KEY" not in environ
            out = []
            reply = await client.execute("print(3)", output_hook=out.append, timeout=60)
            assert reply.content["status"] == "ok"
            assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == ["3\n"]
            await kernel.restart(now=True)
            assert {k: kernel.connection_info[k] for k in before} == before
            assert (await client.execute("1", timeout=60)).content["status"] == "ok"
        assert rec.of(kernel.id, "connection_changed") == []
        await kernel.shutdown()
