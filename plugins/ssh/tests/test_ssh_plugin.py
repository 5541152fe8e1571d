"""The ssh provider end to end: real OpenSSH sshd on loopback, real nanny, real ipykernel.

The "remote" host is this machine reached through sshd, and the remote Python
is a venv with only ipykernel; so "nothing left on the remote side" is
checked with this machine's process table.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import inspect
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap

import kernel_hub_ssh.plugin as plugin
import pytest
import pytest_asyncio
from kernel_hub_ssh.connection import pool_snapshot
from kernel_hub_ssh.manager import SSHKernelManager
from kernel_hub_ssh_testing import (
    listening_sockets,
    process_listing,
    processes_running,
    wait_gone,
)

from kernel_hub import KernelHub
from kernel_hub.contract.errors import LaunchError
from kernel_hub.contract.types import KernelType, LaunchRequest
from kernel_hub.plugins import make_plugin_manager
from kernel_hub.testing import (
    EventRecorder,
    ForeignClient,
    execute_output,
    free_ports,
    interrupt_busy_loop,
)

# ---- hooks (no sshd needed) ----


def test_hooks_are_plain_functions():
    # firstresult hooks must decide synchronously (see kernel_hub.hookspecs).
    for hook in (plugin.find_kernel_types, plugin.launch, plugin.make_manager):
        assert not inspect.iscoroutinefunction(hook)


def test_entry_point_loads_this_plugin():
    (ep,) = [ep for ep in importlib.metadata.entry_points(group="kernel_hub") if ep.name == "ssh"]
    assert ep.load() is plugin
    assert ep.dist is not None and ep.dist.name == "kernel-hub-ssh"
    assert make_plugin_manager().get_plugin("ssh") is plugin
    requires = importlib.metadata.requires("kernel-hub-ssh") or []
    assert any(r.startswith("asyncssh>=2.14") for r in requires)


def test_list_shows_types_without_connecting(tmp_path):
    # A listening socket that nobody may connect to: list must not touch the host.
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen()
        trap.setblocking(False)
        port = trap.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(
            f'[ssh.gpu-box]\nhost = "127.0.0.1"\nport = {port}\ndisplay_name = "GPU box"\n'
            '[ssh.other]\nhost = "never.invalid"\n'
        )
        env = {**os.environ, "KERNEL_HUB_CONFIG": str(config)}
        out = subprocess.run(
            [sys.executable, "-m", "kernel_hub", "list", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        with pytest.raises(BlockingIOError):
            trap.accept()
    types = {t["id"]: t for t in json.loads(out)}
    assert types["ssh/gpu-box"]["display_name"] == "GPU box"
    assert types["ssh/gpu-box"]["provider"] == "ssh"
    assert types["ssh/other"]["metadata"]["host"] == "never.invalid"


# ---- real kernels over real SSH ----


def remote_procs(remote_python) -> list[int]:
    return [pid for pid, _ in processes_running(str(remote_python.parent.parent))]


@pytest.fixture
def ssh_config(sshd, remote_python, tmp_path):
    """The [ssh] section: ``box`` is a working remote kernel type."""
    return {"box": sshd.kernel_table(python=str(remote_python), connect_timeout=15)}


@pytest_asyncio.fixture
async def hub(ssh_config, remote_python):
    async with KernelHub(config={"ssh": ssh_config}, plugins=[plugin], load_entrypoints=False) as h:
        yield h
    assert not h.kernels
    # Nothing of ours on the "remote" side, and no SSH connection left open here.
    assert wait_gone(remote_procs(remote_python)) == []
    assert pool_snapshot() == []


async def run(client, code: str) -> tuple[dict, str]:
    return await execute_output(client, code, timeout=30)


def no_restart(hub) -> dict:
    """Return launch kwargs that keep kernel_hub's restarter (where it exists) out of a test.

    Tests that kill a kernel on purpose check the manager, not what a restarter does next.
    """
    return {"restart": False} if "restart" in inspect.signature(hub.launch).parameters else {}


async def ended(kernel) -> None:
    """Wait until the hub is done with a kernel that died (its watcher cleans up first)."""
    if hasattr(kernel, "wait"):
        await asyncio.wait_for(kernel.wait(), 30)


#: The remote nannies' lease in tests that let it run out (the default is minutes).
LEASE = 3.0


def sshmark(fn):
    """Mark a test that needs sshd and starts real kernels."""
    return pytest.mark.ssh(pytest.mark.integration(pytest.mark.asyncio(fn)))


@sshmark
async def test_launch_execute_interrupt_restart_kill(hub, sshd, remote_python, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # asyncssh and kernel_hub at their most talkative
    events = []
    hub.events.subscribe(events.append)
    kernel = await asyncio.wait_for(
        hub.launch("ssh/box", cwd=str(tmp_path), env={"KH_SSH_TEST": "yes"}, **no_restart(hub)),
        60,
    )
    try:
        assert isinstance(kernel.manager, SSHKernelManager)
        assert repr(kernel.manager).startswith("<SSHKernelManager ssh/box [RUNNING host=root@")
        steps = [e.data["step"] for e in events if e.kind == "progress"]
        assert steps == ["connecting", "starting nanny", "forwarding", "waiting for kernel"]
        assert [e.kind for e in events][-1] == "ready"
        info = kernel.connection_info
        assert info["ip"] == "127.0.0.1"
        state = kernel.describe()["state"]
        assert set(state["remote_ports"]) == {
            "shell_port",
            "iopub_port",
            "stdin_port",
            "control_port",
            "hb_port",
            "nanny_control_port",
            "nanny_events_port",
        }
        # The local ends are not the remote ports (same machine here: they could not be).
        assert all(info[k] != v for k, v in state["remote_ports"].items())
        assert state["ssh"]["port"] == sshd.port and state["nanny_pid"] > 0

        # Nothing of the kernel or the nanny listens on a non-loopback interface.
        listening = listening_sockets()
        for port in [*state["remote_ports"].values(), *(info[k] for k in state["remote_ports"])]:
            addresses = {addr for addr, p in listening if p == port}
            assert addresses == {"127.0.0.1"}, (port, addresses)

        # The key is in no process listing and in no log of either side.
        key = info["key"]
        assert key not in process_listing()
        for name in ("nanny.log", "kernel.log"):
            with open(os.path.join(state["workdir"], name)) as f:
                assert key not in f.read()
        assert key not in sshd.log()

        async with kernel.client() as client:
            content, out = await run(
                client,
                "import os, sys; print(os.getcwd(), os.environ['KH_SSH_TEST'], sys.executable)",
            )
            assert content["status"] == "ok"
            assert out.split() == [str(tmp_path), "yes", str(remote_python)]
            await run(client, "x = 41")

            # interrupt: SIGINT through the nanny, over the tunnel
            code = "print('go', flush=True)\nwhile True: pass"
            reply = await interrupt_busy_loop(client, code, timeout=60, interrupt_timeout=30)
            assert reply.content["ename"] == "KeyboardInterrupt"
            content, out = await run(client, "print(x + 1)")
            assert out == "42\n"

        # restart in place through the nanny: same ports and key, a fresh kernel
        old_pid = state["kernel_pid"]
        new_pid = await kernel.manager.restart()
        assert isinstance(new_pid, int) and new_pid != old_pid
        assert kernel.manager.describe()["kernel_pid"] == new_pid
        assert wait_gone([old_pid], 10) == []
        async with kernel.client() as client:
            content, out = await run(client, "print('x' in dir())")
            assert out == "False\n"

        # kill: wait() returns with the signal status
        waiter = asyncio.ensure_future(kernel.manager.wait())
        await kernel.manager.kill()
        assert await asyncio.wait_for(waiter, 30) == -signal.SIGKILL
        assert not await kernel.manager.is_alive()
        await ended(kernel)
        workdir = state["workdir"]
    finally:
        await kernel.shutdown()
    assert wait_gone(remote_procs(remote_python)) == []
    assert not os.path.exists(workdir)
    assert "ssh" in caplog.text and key not in caplog.text


@sshmark
async def test_two_kernels_share_one_connection(hub, sshd):
    a, b = await asyncio.wait_for(asyncio.gather(hub.launch("ssh/box"), hub.launch("ssh/box")), 90)
    try:
        (conn,) = pool_snapshot()
        assert conn.refs == 2 and conn.connects == 1
        assert len(sshd.session_pids()) == 1
        for kernel in (a, b):
            async with kernel.client() as client:
                content, out = await run(client, "import os; print(os.getpid())")
                assert int(out) == kernel.manager.describe()["kernel_pid"]
    finally:
        await a.shutdown()
        assert conn.state == "CONNECTED"
        await b.shutdown()
    assert conn.state == "CLOSED"


@sshmark
async def test_dropped_connection_and_recovery(hub, sshd):
    events = []
    lost, restored = asyncio.Event(), asyncio.Event()

    def on_event(event):
        events.append(event)
        {"connection_lost": lost, "connection_restored": restored}.get(
            event.kind, asyncio.Event()
        ).set()

    hub.events.subscribe(on_event)
    kernel = await asyncio.wait_for(hub.launch("ssh/box"), 60)
    try:
        died = asyncio.ensure_future(kernel.manager.wait())
        async with kernel.client() as client:
            await run(client, "x = 'still here'")
            (session,) = sshd.session_pids()
            os.kill(session, signal.SIGKILL)
            await asyncio.wait_for(lost.wait(), 30)
            await asyncio.wait_for(restored.wait(), 60)
            await asyncio.wait_for(iopub_live(client), 30)
            # The same client, on the same local ports, reaches the same kernel process.
            content, out = await run(client, "print(x)")
            assert out == "still here\n"
        lost_ev = next(e for e in events if e.kind == "connection_lost")
        assert lost_ev.kernel_id == kernel.id and lost_ev.type_id == "ssh/box"
        assert "downtime" in next(e for e in events if e.kind == "connection_restored").data
        assert not died.done(), "a dropped connection is not a dead kernel"
        assert await kernel.manager.is_alive()
        (conn,) = pool_snapshot()
        assert conn.connects == 2
    finally:
        died.cancel()
        await asyncio.gather(died, return_exceptions=True)
        await kernel.shutdown()


async def iopub_live(client) -> None:
    """Wait until the client's IOPub subscription is live again after a reconnect.

    ZeroMQ re-subscribes by itself, but what the kernel publishes before the new
    subscription reaches it is lost (as after any network blip), e.g. the idle
    status an ``execute`` waits for. So nudge with kernel_info requests until one
    of their status messages arrives, as ``wait_for_ready`` does at start.
    """
    seen = asyncio.Event()
    remove = client.on("iopub", lambda msg: msg.header["msg_type"] == "status" and seen.set())
    try:
        while not seen.is_set():
            with contextlib.suppress(TimeoutError):
                await client.kernel_info(timeout=0.5)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):  # wait_for may swallow the caller's cancel
                    await seen.wait()
    finally:
        remove()


REATTACH = textwrap.dedent(
    """
    import asyncio, json, sys
    import kernel_hub_ssh.plugin as plugin
    from kernel_hub import KernelHub

    async def main():
        saved = json.loads(sys.stdin.read())
        hub = KernelHub(config={"ssh": saved.pop("config")}, plugins=[plugin],
                        load_entrypoints=False)
        kernel = await hub.attach(saved["type_id"], saved["connection_info"], saved["state"])
        async with kernel.client() as client:
            out = []
            hook = lambda m: out.append(m.content.get("text", ""))
            code = "print(x); x = 'seen by the second process'"
            reply = await client.execute(code, output_hook=hook, timeout=30)
        print(json.dumps({"status": reply.content["status"], "out": "".join(out),
                          "ports": kernel.connection_info["shell_port"],
                          "alive": await kernel.manager.is_alive()}))
        await kernel.manager.close()   # detach: the kernel keeps running

    asyncio.run(main())
    """
)


@sshmark
async def test_reattach_from_a_second_process(hub, ssh_config):
    kernel = await asyncio.wait_for(hub.launch("ssh/box"), 60)
    try:
        async with kernel.client() as client:
            await run(client, "x = 'from the first process'")
        saved = {**kernel.describe(), "config": ssh_config}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            REATTACH,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(saved).encode()), 90)
        assert proc.returncode == 0, stderr.decode()
        result = json.loads(stdout.decode().strip().splitlines()[-1])
        assert result["status"] == "ok" and result["alive"] is True
        assert result["out"] == "from the first process\n"
        # This process still holds the original local ports, so the second one chose others.
        assert result["ports"] != kernel.connection_info["shell_port"]
        async with kernel.client() as client:
            content, out = await run(client, "print(x)")
            assert out == "seen by the second process\n"
    finally:
        await kernel.shutdown()


# ---- clear failures ----


async def launch_fails(ssh_config, name: str, table: dict, *, within: float = 60) -> str:
    config = {"ssh": {**ssh_config, name: table}}
    async with KernelHub(config=config, plugins=[plugin], load_entrypoints=False) as hub:
        with pytest.raises(LaunchError) as info:
            await asyncio.wait_for(hub.launch(f"ssh/{name}"), within)
        assert not hub.kernels
    assert pool_snapshot() == []
    return str(info.value)


@sshmark
async def test_remote_python_missing(sshd, ssh_config, remote_python):
    table = sshd.kernel_table(python="/nonexistent/bin/python3", connect_timeout=5)
    msg = await launch_fails(ssh_config, "nopy", table)
    assert f"ssh host 'root@127.0.0.1:{sshd.port}'" in msg
    assert "/nonexistent/bin/python3" in msg and "Set 'python' in [ssh.nopy]" in msg


@sshmark
async def test_ipykernel_missing_remotely(sshd, ssh_config, python_without_ipykernel):
    table = sshd.kernel_table(python=str(python_without_ipykernel), connect_timeout=10)
    msg = await launch_fails(ssh_config, "noipk", table)
    assert f"root@127.0.0.1:{sshd.port}" in msg
    assert "ipykernel is not installed" in msg and "pip install ipykernel" in msg
    assert processes_running(str(python_without_ipykernel.parent.parent)) == []


@sshmark
async def test_remote_kernel_dying_during_start(sshd, ssh_config, remote_python, tmp_path):
    # A module that shadows ipykernel_launcher and exits: the kernel dies right after start.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "ipykernel_launcher.py").write_text(
        "import sys\nprint('broken kernel here', file=sys.stderr)\nsys.exit(3)\n"
    )
    table = sshd.kernel_table(
        python=str(remote_python), connect_timeout=10, env={"PYTHONPATH": str(shadow)}
    )
    msg = await launch_fails(ssh_config, "dies", table)
    assert "exited during start-up (exit status 3)" in msg
    assert f"kernel on ssh host root@127.0.0.1:{sshd.port}" in msg
    assert "broken kernel here" in msg
    assert wait_gone(remote_procs(remote_python)) == []


@sshmark
async def test_unreachable_host_fails_within_connect_timeout(sshd, ssh_config):
    (port,) = free_ports(1)  # nobody listens there
    table = sshd.kernel_table(port=port, connect_timeout=3)
    msg = await launch_fails(ssh_config, "down", table, within=3 + 10)
    assert f"cannot reach ssh host 'root@127.0.0.1:{port}'" in msg


@sshmark
async def test_refused_auth_through_the_hub(sshd, ssh_config, tmp_path):
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    msg = await launch_fails(ssh_config, "stranger", sshd.kernel_table(identity_file=str(key)))
    assert "refused authentication as root" in msg
    assert sshd.session_pids() == [] or wait_gone(sshd.session_pids(), 10) == []


@sshmark
async def test_host_key_mismatch_through_the_hub(sshd, ssh_config, tmp_path):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    kind, blob = (tmp_path / "k.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    msg = await launch_fails(ssh_config, "mitm", sshd.kernel_table(known_hosts=str(known)))
    assert "does NOT match" in msg and str(known) in msg


@sshmark
async def test_host_gone_for_good_reports_the_kernel_dead(sshd, ssh_config, remote_python):
    table = sshd.kernel_table(
        python=str(remote_python), connect_timeout=2, reconnect_timeout=1, lease=LEASE
    )
    config = {"ssh": {**ssh_config, "flaky": table}}
    async with KernelHub(config=config, plugins=[plugin], load_entrypoints=False) as hub:
        kernel = await asyncio.wait_for(hub.launch("ssh/flaky", **no_restart(hub)), 60)
        nanny_pid = kernel.manager.describe()["nanny_pid"]
        try:
            waiter = asyncio.ensure_future(kernel.manager.wait())
            os.kill(sshd.pid, signal.SIGSTOP)  # the host stops answering...
            try:
                (session,) = sshd.session_pids()
                os.kill(session, signal.SIGKILL)  # ...and the link drops
                assert await asyncio.wait_for(waiter, 30) is None
            finally:
                os.kill(sshd.pid, signal.SIGCONT)
            assert not await kernel.manager.is_alive()
            await ended(kernel)
            assert "unreachable for 1.0 s" in (kernel.manager.gone_reason or "")
            assert repr(kernel.manager).startswith("<SSHKernelManager ssh/flaky [GONE")
        finally:
            await kernel.shutdown()
        # The plugin could not reach the nanny to stop it: with no host connected, the nanny
        # ends the kernel and itself once its lease runs out.
        assert wait_gone([nanny_pid], LEASE + 30) == []
    assert wait_gone(remote_procs(remote_python)) == []
    assert pool_snapshot() == []


@sshmark
async def test_a_frozen_link_leaves_nothing_on_the_remote_host(sshd, ssh_config, remote_python):
    # The host's side of the link freezes (a partition: no packet passes, nothing closes).
    # The nanny's heartbeats go unanswered, it drops the dead connections, and its lease runs
    # out: kernel, nanny and work dir end on the remote host, whatever the host knows.
    table = sshd.kernel_table(python=str(remote_python), lease=LEASE)
    config = {"ssh": {**ssh_config, "frozen": table}}
    async with KernelHub(config=config, plugins=[plugin], load_entrypoints=False) as hub:
        kernel = await asyncio.wait_for(hub.launch("ssh/frozen", **no_restart(hub)), 60)
        state = kernel.manager.describe()
        (session,) = sshd.session_pids()
        os.kill(session, signal.SIGSTOP)
        try:
            gone = await asyncio.to_thread(wait_gone, [state["nanny_pid"]], LEASE + 30)
            assert gone == []
            assert wait_gone([state["kernel_pid"]], 30) == []
            assert not os.path.exists(state["workdir"])
        finally:
            os.kill(session, signal.SIGKILL)  # the link drops; on reconnect the nanny is gone
            # SIGKILL ends a stopped process too; sshd may have reaped it already.
            with contextlib.suppress(ProcessLookupError):
                os.kill(session, signal.SIGCONT)
            await ended(kernel)
            await kernel.shutdown()
    assert wait_gone(remote_procs(remote_python)) == []
    assert pool_snapshot() == []


@pytest.mark.asyncio
async def test_hook_make_manager_rejects_a_state_without_ssh_details():
    kt = KernelType(provider="ssh", name="box")
    info = {"nanny_control_port": 1, "nanny_events_port": 2, "key": "k"}
    pending = plugin.make_manager(hub=None, kernel_type=kt, connection_info=info, state={})
    with pytest.raises(LaunchError, match="ssh/box: its state lacks the SSH details"):
        await pending


def test_hook_launch_of_an_unconfigured_name():
    from kernel_hub.contract.errors import NoSuchKernelType

    class Hub:
        def config_for(self, name):
            return {"box": {"host": "h"}}

    with pytest.raises(NoSuchKernelType, match="ssh/gone"):
        plugin.launch(
            hub=Hub(),
            kernel_type=KernelType(provider="ssh", name="gone"),
            request=LaunchRequest("k"),
        )


@sshmark
async def test_restarter_relaunches_a_dead_remote_kernel(hub, remote_python):
    if "restart" not in inspect.signature(hub.launch).parameters:
        pytest.skip("needs kernel_hub's restarter (the lifecycle work), not on this branch yet")
    from kernel_hub import RestartPolicy

    events = []
    restarted = asyncio.Event()

    def on_event(event):
        events.append(event.kind)
        if event.kind == "restarted":
            restarted.set()

    hub.events.subscribe(on_event)
    policy = RestartPolicy(backoff_initial=0.1, backoff_max=0.1, jitter=0)
    kernel = await asyncio.wait_for(hub.launch("ssh/box", restart=policy), 60)
    try:
        old_pid = kernel.manager.describe()["kernel_pid"]
        os.kill(old_pid, signal.SIGKILL)  # the "remote" kernel dies on its own
        await asyncio.wait_for(restarted.wait(), 60)
        lifecycle = [k for k in events if k in ("died", "restarting", "restarted")]
        assert lifecycle == ["died", "restarting", "restarted"]
        # The relaunch went through the plugin again: a new nanny, reported step by step.
        assert events.count("progress") == 8
        new_pid = kernel.manager.describe()["kernel_pid"]
        assert new_pid != old_pid
        async with kernel.client() as client:
            content, out = await run(client, "import os; print(os.getpid())")
            assert int(out) == new_pid
    finally:
        await kernel.shutdown()


ENDPOINT = ["transport", "ip", "shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]
ENDPOINT += ["key", "signature_scheme"]


def endpoint(info) -> dict:
    return {k: info[k] for k in ENDPOINT}


def proc_file(pid: int, name: str) -> bytes:
    """Return /proc/<pid>/<name> of a "remote" process (the remote host is this machine)."""
    with open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read()


@sshmark
async def test_a_relaunched_remote_kernel_keeps_local_ports_and_key_and_every_client(hub):
    """Issue 21: after a kill -9 of the remote kernel and a restart(now=True), the same endpoint."""
    from kernel_hub import RestartPolicy

    rec = EventRecorder(hub)
    policy = RestartPolicy(backoff_initial=0.1, backoff_max=0.1, jitter=0)
    kernel = await asyncio.wait_for(hub.launch("ssh/box", restart=policy), 60)
    before = endpoint(kernel.connection_info)
    foreign = ForeignClient(kernel.connection_info)
    try:
        await foreign.start()
        assert await foreign.print_1() == ["1\n"]
        async with kernel.client() as client:
            assert (await client.execute("x = 1", timeout=60)).content["status"] == "ok"
            old = kernel.manager.describe()
            os.kill(old["kernel_pid"], signal.SIGKILL)  # the "remote" kernel dies on its own
            await rec.wait_for("restarted", kernel.id, timeout=60)
            new = kernel.manager.describe()
            assert (new["nanny_pid"], new["kernel_pid"]) != (old["nanny_pid"], old["kernel_pid"])
            assert endpoint(kernel.connection_info) == before
            # The key went to the new nanny on its stdin, after its code: not on its command
            # line nor in its environment, and the kernel does not inherit it.
            assert before["key"].encode() not in proc_file(new["nanny_pid"], "cmdline")
            assert before["key"].encode() not in proc_file(new["nanny_pid"], "environ")
            assert before["key"].encode() not in proc_file(new["kernel_pid"], "environ")
            assert before["key"].encode() not in proc_file(new["kernel_pid"], "cmdline")
            # Both clients made before the death reach the new kernel (jupyter_client's waits
            # for its IOPub to come back through the tunnel first, as a rejoining client does).
            await foreign.wait_for_iopub()
            assert await foreign.print_1() == ["1\n"]
            out = []
            reply = await client.execute("print(2)", output_hook=out.append, timeout=60)
            assert reply.content["status"] == "ok"
            assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == ["2\n"]

            await kernel.restart(now=True)
            assert endpoint(kernel.connection_info) == before
            await foreign.wait_for_iopub()
            assert await foreign.print_1() == ["1\n"]
            assert (await client.execute("1", timeout=60)).content["status"] == "ok"
        assert rec.of(kernel.id, "connection_changed") == []
    finally:
        await foreign.close()
        rec.close()
        await kernel.shutdown()


@sshmark
async def test_a_local_port_taken_before_the_relaunch_gives_new_ports_and_the_same_key(hub):
    from kernel_hub import RestartPolicy

    rec = EventRecorder(hub)
    policy = RestartPolicy(backoff_initial=0.3, backoff_max=1, jitter=0)
    kernel = await asyncio.wait_for(hub.launch("ssh/box", restart=policy), 60)
    before = dict(kernel.connection_info)
    thief = socket.socket()

    def steal(event) -> None:
        # 'restarting' comes after the old tunnels are closed and before the relaunch: another
        # process's server takes the local shell port meanwhile.
        if event.kernel_id == kernel.id and event.kind == "restarting":
            thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            thief.bind(("127.0.0.1", before["shell_port"]))
            thief.listen(1)

    unsubscribe = hub.events.subscribe(steal)
    try:
        async with kernel.client() as client:
            assert (await client.execute("x = 1", timeout=60)).content["status"] == "ok"
            os.kill(kernel.manager.describe()["kernel_pid"], signal.SIGKILL)
            await rec.wait_for("restarted", kernel.id, timeout=60)
            after = kernel.connection_info
            assert thief.getsockname() == ("127.0.0.1", before["shell_port"])
            assert after["shell_port"] != before["shell_port"]
            assert after["key"] == before["key"]
            changed = rec.of(kernel.id, "connection_changed")
            assert [e.data["shell_port"] for e in changed] == [after["shell_port"]]
            assert "key" not in changed[0].data and changed[0].data["key_changed"] is False
            assert (await client.execute("1", timeout=60)).content["status"] == "ok"
    finally:
        unsubscribe()
        thief.close()
        rec.close()
        await kernel.shutdown()


@sshmark
async def test_an_ssh_kernel_and_its_nanny_speak_curve_end_to_end_and_keep_their_keys(
    hub, remote_python
):
    """Issue 24: the remote nanny judges its ipykernel (7.4: Curve) and keeps the keys on relaunch.

    The tunnels carry Curve end to end: a keyless sniffer on the remote ports (this
    machine's, since sshd runs here) and on the local tunnel ends reads nothing.
    """
    from kernel_hub import RestartPolicy
    from kernel_hub.testing import Sniffer

    version = subprocess.run(
        [str(remote_python), "-c", "import importlib.metadata as m; print(m.version('ipykernel'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert tuple(int(x) for x in version.split(".")[:2]) >= (7, 4), version
    rec = EventRecorder(hub)
    policy = RestartPolicy(backoff_initial=0.1, backoff_max=0.1, jitter=0)
    kernel = await asyncio.wait_for(hub.launch("ssh/box", restart=policy), 60)
    try:
        info = kernel.connection_info
        assert info["curve_publickey"] and info["curve_secretkey"]
        remote = kernel.manager.describe()["remote_ports"]
        places = [
            info,
            {
                "ip": "127.0.0.1",
                "shell_port": remote["shell_port"],
                "iopub_port": remote["iopub_port"],
            },
            {
                "ip": "127.0.0.1",
                "shell_port": remote["nanny_control_port"],
                "iopub_port": remote["nanny_events_port"],
            },
        ]
        for place in places:
            sniffer = Sniffer(place)
            try:
                assert await asyncio.to_thread(sniffer.handshake, "shell") is False
                assert await asyncio.to_thread(sniffer.handshake, "iopub") is False
            finally:
                sniffer.close()
        async with kernel.client() as client:
            assert (await client.execute("x = 1", timeout=60)).content["status"] == "ok"
            old = kernel.manager.describe()
            os.kill(old["kernel_pid"], signal.SIGKILL)
            await rec.wait_for("restarted", kernel.id, timeout=60)
            new = kernel.manager.describe()
            assert kernel.connection_info["curve_publickey"] == info["curve_publickey"]
            secret = info["curve_secretkey"].encode()
            for name in ("cmdline", "environ"):
                assert secret not in proc_file(new["nanny_pid"], name)
                assert secret not in proc_file(new["kernel_pid"], name)
            out = []
            reply = await client.execute("print(2)", output_hook=out.append, timeout=60)
            assert reply.content["status"] == "ok"
            assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == ["2\n"]
        assert rec.of(kernel.id, "connection_changed") == []
    finally:
        rec.close()
        await kernel.shutdown()
