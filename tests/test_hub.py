"""KernelHub and RunningKernel with real kernels: launch, failure, cleanup, re-attach."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from kernel_hub import KernelHub, KernelType, LaunchError, SubprocessManager, hookimpl
from kernel_hub import launch_subprocess as _launch
from kernel_hub.testing import spawn_grandchild

pytestmark = [pytest.mark.integration, pytest.mark.asyncio]


class Crashy:
    """A provider whose kernel dies at once, printing a reason to stderr."""

    name = "crashy"

    @staticmethod
    @hookimpl
    def find_kernel_types(hub):
        code = "import sys; sys.stderr.write('no module named frobnicate\\n'); sys.exit(3)"
        return [KernelType(provider="crashy", name="k", argv=(sys.executable, "-c", code))]

    @staticmethod
    @hookimpl
    def launch(hub, kernel_type, request):
        return _launch(kernel_type, request) if kernel_type.provider == "crashy" else None

    @staticmethod
    @hookimpl
    def make_manager(hub, kernel_type, connection_info, state):
        if kernel_type.provider != "crashy":
            return None
        return SubprocessManager.from_state(state)


async def test_launch_gives_a_running_kernel_with_private_connection_file(hub, tmp_path):
    kernel = await hub.launch("ipykernel/python3", cwd=str(tmp_path), env={"KH_X": "y"})
    try:
        assert hub.kernels[kernel.id] is kernel and hub.get(kernel.id) is kernel
        assert repr(kernel).endswith("[RUNNING]>")
        assert "RUNNING pid=" in repr(kernel.manager)
        json.dumps(kernel.state)
        json.dumps(kernel.describe())
        info = kernel.connection_info
        assert info["ip"] == "127.0.0.1" and len(info["key"]) == 64
        cf = Path(kernel.state["connection_file"])
        assert stat.S_IMODE(cf.stat().st_mode) == 0o600
        async with kernel.client() as c:
            out = []
            code = "import os; print(os.getcwd(), os.environ['KH_X'])"
            await c.execute(code, output_hook=out.append, timeout=60)
        assert out[-1].content["text"].split() == [str(tmp_path), "y"]
    finally:
        await kernel.shutdown()
    assert not cf.exists() and not Path(kernel.state["log_file"]).exists()
    assert kernel.id not in hub.kernels
    assert repr(kernel).endswith("[DEAD]>")


async def test_kernel_dying_during_start_is_a_clear_error_and_leaves_nothing():
    async with KernelHub(plugins=[Crashy], load_entrypoints=False, config={}) as hub:
        with pytest.raises(LaunchError) as info:
            await hub.launch("crashy/k")
        assert not hub.kernels
    msg = str(info.value)
    assert "exited during start-up (exit status 3)" in msg
    assert "no module named frobnicate" in msg
    runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"])
    assert not list(runtime.glob("kernel-*"))


#: A kernel command that, while *marker* does not exist, creates it and first takes its own
#: shell port with a listening socket, as another process might between choice and bind.
PORT_THIEF = """
import json, os, runpy, socket, sys
cf, marker = sys.argv[1], sys.argv[2]
if not os.path.exists(marker):
    open(marker, "w").close()
    thief = socket.socket()
    thief.bind(("127.0.0.1", json.load(open(cf))["shell_port"]))
    thief.listen()
sys.argv = ["ipykernel_launcher", "-f", cf]
runpy.run_module("ipykernel_launcher", run_name="__main__")
"""


async def test_a_kernel_whose_port_was_taken_is_launched_again_with_new_ports(tmp_path):
    marker = tmp_path / "port-taken-once"
    argv = (sys.executable, "-c", PORT_THIEF, "{connection_file}", str(marker))

    class Thief(Crashy):
        name = "thief"

        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            return [KernelType(provider="crashy", name="thief", argv=argv)]

    async with KernelHub(plugins=[Thief], load_entrypoints=False, config={}) as hub:
        kernel = await hub.launch("crashy/thief")
        assert marker.exists()  # the first attempt lost its port and died
        async with kernel.client() as c:
            reply = await c.execute("1 + 1", timeout=60)
        assert reply.content["status"] == "ok"
    runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"])
    assert not list(runtime.glob(f"kernel-{kernel.id}*"))


async def test_missing_program_and_missing_cwd_are_launch_errors(hub, tmp_path):
    kt = KernelType(provider="crashy", name="x", argv=("/no/such/program", "{connection_file}"))

    class Missing(Crashy):
        name = "missing"

        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            return [kt]

    async with KernelHub(plugins=[Missing], load_entrypoints=False, config={}) as h:
        with pytest.raises(LaunchError, match="running '/no/such/program' failed"):
            await h.launch("crashy/x")
    with pytest.raises(LaunchError, match="working directory .*nope.* does not exist"):
        await hub.launch("ipykernel/python3", cwd=str(tmp_path / "nope"))


async def test_attach_from_describe_in_a_second_hub(hub):
    kernel = await hub.launch("ipykernel/python3")
    saved = json.loads(json.dumps(kernel.describe()))
    async with KernelHub(config={}) as other:
        again = await other.attach(saved["type_id"], saved["connection_info"], saved["state"])
        async with again.client() as c:
            reply = await c.execute("1+1", timeout=60)
            assert reply.content["status"] == "ok"
        await again.shutdown()
    assert not await kernel.manager.is_alive()
    await kernel.shutdown()


async def test_traced_hook_calls_log_no_connection_key(hub, monkeypatch, caplog):
    kernel = await hub.launch("ipykernel/python3")
    key = kernel.connection_info["key"]
    monkeypatch.setenv("KERNEL_HUB_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, "kernel_hub.plugins"):
        async with KernelHub(config={}) as other:
            again = await other.attach(**kernel.describe())
            await again.shutdown()
    # make_manager's arguments were traced: the connection info, with its key redacted
    assert "make_manager" in caplog.text
    assert "'key': '<redacted>'" in caplog.text
    assert key not in caplog.text
    await kernel.shutdown()


async def test_shutdown_reaches_grandchildren(hub):
    kernel = await hub.launch("ipykernel/python3")
    async with kernel.client() as c:
        grandchild = await spawn_grandchild(c)
    await kernel.shutdown()
    with pytest.raises(ProcessLookupError):
        for _ in range(100):  # the kill is synchronous; reaping by init may lag a moment
            os.kill(grandchild, 0)
            import asyncio

            await asyncio.sleep(0.02)


async def test_kill_then_shutdown_is_quiet(hub):
    kernel = await hub.launch("ipykernel/python3")
    await kernel.manager.signal(signal.SIGKILL)
    assert await kernel.manager.wait() == -9
    await kernel.shutdown()
    assert not hub.kernels


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"env": {"A": 1}}, "launch env['A'] must be a str, not int"),
        ({"env": {"A=B": "x"}}, "'A=B' is not a valid environment variable name"),
        ({"env": {"A\0": "x"}}, "'A\\x00' is not a valid environment variable name"),
        ({"env": {"": "x"}}, "'' is not a valid environment variable name"),
        ({"env": {"A": "x\0y"}}, "launch env['A'] contains a NUL character"),
        ({"env": "A=1"}, "launch env must be a mapping of str to str, not str"),
        ({"kernel_id": "../../escape"}, "launch kernel_id '../../escape' is not a valid"),
        ({"cwd": "/tmp\0x"}, "launch cwd '/tmp\\x00x' is not a usable path"),
        ({"params": {"when": object()}}, "launch params must be JSON-able"),
    ],
)
async def test_a_bad_launch_request_names_its_entry_and_leaves_nothing(hub, arguments, named):
    events = []
    hub.events.subscribe(events.append)
    runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"])
    before = set(runtime.iterdir())
    with pytest.raises(ValueError) as info:
        await hub.launch("ipykernel/python3", **arguments)
    assert named in str(info.value)
    assert "\n" not in str(info.value)
    assert set(runtime.iterdir()) == before  # no connection file, no log
    assert not events  # not even a "starting": nothing was begun
    assert not hub.kernels


async def test_a_type_whose_own_env_cannot_be_passed_on_is_a_launch_error(tmp_path):
    env = {"BAD=NAME": "x"}
    kt = KernelType(
        provider="crashy", name="env", argv=(sys.executable, "{connection_file}"), env=env
    )

    class BadEnv(Crashy):
        name = "badenv"

        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            return [kt]

    async with KernelHub(plugins=[BadEnv], load_entrypoints=False, config={}) as hub:
        with pytest.raises(LaunchError, match="crashy/env: its argv or env cannot be passed"):
            await hub.launch("crashy/env")
    runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"])
    assert not list(runtime.glob("kernel-*"))


@pytest.mark.integration
@pytest.mark.parametrize("tenths", [0, 3, 6, 9])
async def test_a_cancelled_launch_leaves_no_socket_open(tenths):
    """The readiness client closed its sockets only if its close was not cancelled too."""
    import gc

    from kernel_hub.wire.context import hub_context

    def open_sockets() -> int:
        gc.collect()
        return sum(1 for s in list(hub_context()._sockets) if not s.closed)

    async with KernelHub(config={}) as hub:
        before = open_sockets()
        task = asyncio.ensure_future(hub.launch("ipykernel/python3", restart=False))
        # Not a synchronisation: it moves the cancel along the start; any point must hold.
        await asyncio.sleep(tenths / 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if task.cancelled():
            assert open_sockets() == before
        else:  # it was ready first: shut it down, then nothing of it stays open
            await task.result().shutdown()
            assert open_sockets() == before
