"""Slurm through a login node: a real sshd on loopback in front of the real one-node cluster.

The host process reaches Slurm only through the login node: Slurm's tools are
taken off its ``PATH`` and ``SLURM_CONF`` out of its environment (the login
node's sessions get it from sshd's ``SetEnv``, as a site sets it up), and any
command that the plugin ran on this machine fails the test. The test's own
checks of the queue use the cluster kit's absolute paths.

Cross-plugin: skipped where the ssh plugin or its kit is not installed (the
slurm plugin's own suite in a venv of its own).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("kernel_hub_ssh")
ssh_testing = pytest.importorskip("kernel_hub_ssh_testing")

import kernel_hub_slurm.plugin  # noqa: E402
from kernel_hub_slurm.cluster import LocalRunner  # noqa: E402
from kernel_hub_slurm.login import LoginRunner  # noqa: E402
from kernel_hub_slurm.manager import SlurmKernelManager  # noqa: E402
from kernel_hub_ssh.connection import pool_snapshot  # noqa: E402

from kernel_hub import KernelHub  # noqa: E402
from kernel_hub.conformance import (  # noqa: E402
    execute_output,
    interrupt_busy_loop,
    load_plugins,
)
from kernel_hub.provider import KernelHubError, LaunchError  # noqa: E402
from kernel_hub.testing import ProviderConformance, processes_with_env  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.ssh, pytest.mark.integration]


@pytest.fixture(scope="module")
def login_node(slurm_cluster, tmp_path_factory):
    """A real sshd on 127.0.0.1 whose sessions see the test cluster: the login node."""
    server = ssh_testing.start_sshd(
        tmp_path_factory.mktemp("login"),
        extra_config=[
            f"SetEnv SLURM_CONF={slurm_cluster.conf}",
            "Subsystem sftp internal-sftp",  # the job's files go over SFTP
        ],
    )
    try:
        yield server
    finally:
        server.stop()


def _host_path(tmp_path: Path) -> str:
    """A PATH for the host process with no Slurm tool on it."""
    bare = tmp_path / "bin"
    bare.mkdir(exist_ok=True)
    return str(bare)


@pytest.fixture
def no_local_slurm(monkeypatch, tmp_path):
    """Take Slurm off this process (PATH, SLURM_CONF); fail on any local Slurm command."""
    local_calls = []

    async def refuse(self, argv, **kwargs):
        local_calls.append(list(argv))
        raise AssertionError(f"a Slurm command ran on this machine: {argv}")

    monkeypatch.setattr(LocalRunner, "run", refuse)
    monkeypatch.setenv("PATH", _host_path(tmp_path))
    monkeypatch.delenv("SLURM_CONF", raising=False)
    assert shutil.which("sbatch") is None and shutil.which("squeue") is None
    yield
    assert local_calls == [], f"Slurm commands ran on this machine: {local_calls}"


@pytest.fixture
def login_config(login_node, slurm_table, no_local_slurm):
    """A config with the login node as [ssh.hpc] and a [slurm.k] that submits through it."""
    return {
        "ssh": {"hpc": login_node.kernel_table()},
        "slurm": {"k": {**slurm_table, "login": "hpc"}},
    }


def _hub(config):
    return KernelHub(plugin_manager=load_plugins([kernel_hub_slurm.plugin]), config=config)


async def _gone_from_queue(cluster, job_id, timeout=60):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while job_id in cluster.jobs() and loop.time() < deadline:
        await asyncio.sleep(0.2)  # polling squeue: a job's end has no event for us
    return job_id not in cluster.jobs()


@pytest.mark.asyncio
async def test_a_kernel_through_the_login_node(slurm_cluster, login_config, monkeypatch):
    sent = []  # every command the plugin ran on the login node, with its stdin
    run = LoginRunner.run

    async def recording(self, argv, *, input=None, timeout=30.0):
        sent.append((list(argv), input or b""))
        return await run(self, argv, input=input, timeout=timeout)

    monkeypatch.setattr(LoginRunner, "run", recording)
    async with _hub(login_config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        manager = kernel.manager
        assert isinstance(manager, SlurmKernelManager)
        assert isinstance(manager.cli.runner, LoginRunner)
        state = manager.describe()
        assert state["runner"]["kind"] == "ssh"
        assert state["runner"]["ssh"]["port"] == login_config["ssh"]["hpc"]["port"]
        job_id = state["job_id"]
        assert job_id in slurm_cluster.jobs()
        # The job's files came over SFTP: a 0700 directory, the nanny 0600, and the
        # registration file (0600 too) already read and deleted by the nanny.
        job_dir = Path(state["job_dir"])
        assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((job_dir / "nanny.py").stat().st_mode) == 0o600
        assert not (job_dir / "register.json").exists()
        async with kernel.client() as client:
            _, text = await execute_output(
                client, "import os; print(os.environ['SLURM_JOB_ID'])", timeout=60
            )
        assert text.strip() == job_id
        key = kernel.connection_info["key"]
        key = key.decode() if isinstance(key, bytes) else key
        programs = [argv[0] for argv, _ in sent]
        assert {"sbatch", "squeue"} <= set(programs), programs
        for argv, stdin in sent:  # no key on a command line there, nor in the job script
            assert key not in " ".join(argv) and key.encode() not in stdin
        assert len(pool_snapshot()) == 1  # one shared connection to the login node
        await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, job_id)
    assert not job_dir.exists(), "the job dir outlived the kernel"
    assert "scancel" in [argv[0] for argv, _ in sent]
    assert pool_snapshot() == []  # the last user gave the connection back


class _Events:
    """Collect a hub's events (they may come from the SSH loop's thread); wait for a kind."""

    def __init__(self, hub):
        self.seen = []
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        hub.events.subscribe(self._on)

    def _on(self, event):
        self.seen.append(event)
        self._loop.call_soon_threadsafe(self._changed.set)

    async def wait_for(self, kind, timeout):
        async with asyncio.timeout(timeout):
            while True:
                for e in self.seen:
                    if e.kind == kind:
                        return e
                self._changed.clear()
                await self._changed.wait()


@pytest.mark.asyncio
async def test_kernel_traffic_goes_through_the_login_node_and_survives_its_loss(
    slurm_cluster, login_config, login_node
):
    async with _hub(login_config) as hub:
        events = _Events(hub)
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        manager = kernel.manager
        state = manager.describe()
        assert state["route"] == "login"
        remote, info = state["remote_info"], kernel.connection_info
        # The client's ports are this process's tunnels, relayed by the login node's sshd to
        # the kernel's ports on its node: never the node's own ports.
        local = manager.tunnels.local_ports
        assert info["ip"] == "127.0.0.1" and len(local) == 7
        for name, port in local.items():
            assert info[name] == port != remote[name], name
        async with kernel.client() as client:
            await client.execute("x = 1", timeout=60)
            # Cut the SSH connection (its sshd session dies): lost, then restored.
            for pid in login_node.session_pids():
                os.kill(pid, signal.SIGKILL)
            lost = await events.wait_for("connection_lost", 60)
            restored = await events.wait_for("connection_restored", 60)
            assert lost.data["job_id"] == restored.data["job_id"] == state["job_id"]
            # ZeroMQ reconnected the client's sockets through the tunnels; IOPub delivers
            # again once its subscription has gone through (as after any reconnect).
            await client.wait_for_ready(60)
            _, text = await execute_output(client, "print(x + 1)", timeout=60)
        assert text.strip() == "2"
        assert kernel.status != "DEAD" and "died" not in [e.kind for e in events.seen]
        await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, state["job_id"])


@pytest.mark.asyncio
async def test_route_direct_keeps_kernel_traffic_off_the_ssh_connection(
    slurm_cluster, login_config
):
    login_config["slurm"]["k"]["route"] = "direct"
    async with _hub(login_config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        state = kernel.manager.describe()
        assert state["route"] == "direct" and kernel.manager.tunnels is None
        for name, port in state["remote_info"].items():
            assert kernel.connection_info[name] == port  # the node's own address and ports
        async with kernel.client() as client:
            _, text = await execute_output(client, "print('direct')", timeout=60)
        assert text.strip() == "direct"
        await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, state["job_id"])


@pytest.mark.asyncio
async def test_job_dir_under_the_login_nodes_home(slurm_cluster, login_config):
    base = f"~/.kernel-hub-test-{os.getpid()}-{time.monotonic_ns()}"
    login_config["slurm"]["k"]["job_dir"] = base + "/jobs"
    where = Path(os.path.expanduser(base))  # the login node is this machine: the same home
    try:
        async with _hub(login_config) as hub:
            kernel = await hub.launch("slurm/k", ready_timeout=120)
            job_dir = kernel.manager.describe()["job_dir"]
            assert job_dir.startswith(str(where / "jobs") + "/"), job_dir  # "~" of the login node
            assert stat.S_IMODE((where / "jobs").stat().st_mode) == 0o700
            await kernel.shutdown()
        assert not Path(job_dir).exists()
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.asyncio
async def test_an_unknown_login_host_key_is_refused(
    login_node, slurm_table, no_local_slurm, tmp_path
):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = {
        "ssh": {"hpc": login_node.kernel_table(known_hosts=str(empty))},
        "slurm": {"k": {**slurm_table, "login": "ssh/hpc"}},
    }
    async with _hub(config) as hub:
        with pytest.raises(Exception, match=r"host key of ssh host .* is unknown") as info:
            await hub.launch("slurm/k", ready_timeout=120)
    assert "ssh-keyscan" in str(info.value)
    assert pool_snapshot() == []


@pytest.mark.asyncio
async def test_login_naming_no_ssh_table_says_so(slurm_table, no_local_slurm):
    config = {"slurm": {"k": {**slurm_table, "login": "ssh/nowhere"}}}
    async with _hub(config) as hub:
        with pytest.raises(Exception, match=r"names no \[ssh.nowhere\] table; add one"):
            await hub.launch("slurm/k", ready_timeout=30)


_SECOND_PROCESS = textwrap.dedent(
    """
    import asyncio, json, shutil, sys
    import kernel_hub_slurm.plugin
    from kernel_hub import KernelHub
    from kernel_hub.conformance import execute_output, load_plugins

    async def main():
        assert shutil.which("sbatch") is None, "sbatch is on this process's PATH"
        saved = json.loads(sys.stdin.read())
        pm = load_plugins([kernel_hub_slurm.plugin])
        async with KernelHub(plugin_manager=pm, config=saved["config"]) as hub:
            k = saved["kernel"]
            kernel = await hub.attach(k["type_id"], k["connection_info"], k["state"])
            print(repr(kernel.manager.cli.runner), flush=True)
            async with kernel.client() as client:
                _, text = await execute_output(client, "print(x * 2)", timeout=60)
            print("output", text.strip(), flush=True)
            await kernel.shutdown()
            print("shut down", flush=True)

    asyncio.run(main())
    """
)


def _host_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env["PATH"] = _host_path(tmp_path)
    return env


@pytest.mark.asyncio
async def test_reattach_from_a_second_process_rebuilds_the_connection(
    slurm_cluster, login_config, login_node, tmp_path
):
    async with _hub(login_config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        job_id = kernel.manager.describe()["job_id"]
        async with kernel.client() as client:
            await client.execute("x = 21", timeout=60)
        # The state says where Slurm is: the second process connects to the login node again.
        saved = json.dumps({"config": login_config, "kernel": kernel.describe()})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _SECOND_PROCESS,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_host_env(tmp_path),
        )
        out, err = await asyncio.wait_for(proc.communicate(saved.encode()), 180)
        lines = out.decode().splitlines()
        assert proc.returncode == 0, err.decode()[-2000:]
        assert lines[0].startswith(f"<LoginRunner {login_node.user}@127.0.0.1:{login_node.port}")
        assert lines[1:] == ["output 42", "shut down"], lines
        await asyncio.wait_for(kernel.wait(), 60)
    assert await _gone_from_queue(slurm_cluster, job_id)


@pytest.mark.asyncio
async def test_scancel_through_the_login_node_is_a_death_with_its_reason(
    slurm_cluster, login_config
):
    async with _hub(login_config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        job_id = kernel.manager.describe()["job_id"]
        slurm_cluster.run("scancel", job_id)
        await asyncio.wait_for(kernel.wait(), 60)
        assert kernel.manager.exit_reason == f"Slurm job {job_id} was cancelled (scancel)"
    assert await _gone_from_queue(slurm_cluster, job_id)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.asyncio
async def test_time_limit_through_the_login_node(slurm_cluster, login_config):
    login_config["slurm"]["k"]["time"] = "1"
    async with _hub(login_config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        job_id = kernel.manager.describe()["job_id"]
        await asyncio.wait_for(kernel.wait(), 240)  # Slurm checks limits about every 30 s
        assert kernel.manager.exit_reason.startswith(
            f"Slurm job {job_id} reached its time limit (1)"
        )
    assert await _gone_from_queue(slurm_cluster, job_id)


_HOST = textwrap.dedent(
    """
    import asyncio, json, sys
    import kernel_hub_slurm.plugin
    from kernel_hub import KernelHub
    from kernel_hub.conformance import load_plugins

    async def main():
        config = json.loads(sys.stdin.read())
        pm = load_plugins([kernel_hub_slurm.plugin])
        async with KernelHub(plugin_manager=pm, config=config) as hub:
            kernel = await hub.launch("slurm/k", ready_timeout=120)
            print(json.dumps(kernel.manager.describe()), flush=True)
            await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.mark.timeout(240)
@pytest.mark.asyncio
async def test_host_killed_outright_the_job_ends_after_the_lease(
    slurm_cluster, login_config, tmp_path
):
    login_config["slurm"]["k"]["lease"] = 5
    state = {}
    host = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOST,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_host_env(tmp_path),
    )
    try:
        host.stdin.write(json.dumps(login_config).encode())
        host.stdin.close()
        line = await asyncio.wait_for(host.stdout.readline(), 180)
        assert line, (await host.stderr.read()).decode()[-2000:]
        state = json.loads(line)
        job_id = state["job_id"]
        host.kill()  # SIGKILL: the host can clean up nothing, and its SSH link drops
        await host.wait()
        killed = time.monotonic()
        assert await _gone_from_queue(slurm_cluster, job_id, timeout=90)
        took = time.monotonic() - killed
        assert took >= 4, f"the job ended {took:.1f} s after the host died: before its lease"
        log = Path(state["job_dir"], "job.log").read_text()
        assert "the lease" in log, log
        assert processes_with_env(f"SLURM_JOB_ID={job_id}") == []
    finally:
        if host.returncode is None:
            os.kill(host.pid, signal.SIGKILL)
            await host.wait()
        if state.get("job_dir"):  # left by the killed host (the next launch would sweep it)
            shutil.rmtree(state["job_dir"], ignore_errors=True)


class TestSlurmLoginConformance(ProviderConformance):
    """The conformance battery on a Slurm type that submits through the login node."""

    pytestmark = [pytest.mark.slurm, pytest.mark.ssh]
    plugins = [kernel_hub_slurm.plugin]
    type_ids = ["slurm/k"]
    launch_timeout = 120.0
    timeout = 60.0
    interrupt_timeout = 30.0

    @pytest.fixture
    def conformance_setup(self, slurm_cluster, login_config):
        self.cluster = slurm_cluster
        return login_config

    async def assert_nothing_left(self, kernel, state):
        await super().assert_nothing_left(kernel, state)
        assert await _gone_from_queue(self.cluster, state["job_id"], self.timeout)
        assert not os.path.exists(state["job_dir"]), f"job dir {state['job_dir']} left behind"
        assert pool_snapshot() == []


def _outside_address() -> str:
    """Return an address of this machine other than loopback (the login node as nodes see it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP connect picks the route's source; nothing is sent
        except OSError:
            pytest.skip("this machine has no address besides loopback")
        address = str(s.getsockname()[0])
    if ipaddress.ip_address(address).is_loopback:
        pytest.skip("this machine has no address besides loopback")
    return address


@pytest.mark.asyncio
async def test_a_login_node_binding_forwards_to_loopback_fails_at_once(
    slurm_cluster, login_config, monkeypatch
):
    # The kit's sshd has GatewayPorts no: it binds the registration's forward on 127.0.0.1
    # whatever was asked, so a nanny dialing the login node's outside address is refused.
    login_config["slurm"]["k"].update(login_ip=_outside_address(), start_timeout=60)
    sent = []
    run = LoginRunner.run

    async def recording(self, argv, *, input=None, timeout=30.0):
        sent.append(argv[0])
        return await run(self, argv, input=input, timeout=timeout)

    monkeypatch.setattr(LoginRunner, "run", recording)
    async with _hub(login_config) as hub:
        began = time.monotonic()
        with pytest.raises(LaunchError) as info:
            await hub.launch("slurm/k", ready_timeout=120)
        took = time.monotonic() - began
    message = str(info.value)
    assert "\n" not in message
    assert "binds remote forwards to loopback only" in message
    assert "GatewayPorts clientspecified" in message and "route = 'direct'" in message
    assert took < 20, f"failed after {took:.1f} s: at start_timeout, not at once"
    assert "sbatch" not in sent  # nothing was submitted
    assert slurm_cluster.jobs() == []
    assert pool_snapshot() == []


@pytest.fixture
def open_login_node(slurm_cluster, tmp_path):
    """A login node whose sshd binds remote forwards where the client asks."""
    server = ssh_testing.start_sshd(
        tmp_path / "open-login",
        extra_config=[
            f"SetEnv SLURM_CONF={slurm_cluster.conf}",
            "Subsystem sftp internal-sftp",
            "GatewayPorts clientspecified",
        ],
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.asyncio
async def test_gateway_ports_clientspecified_lets_the_nodes_dial_the_login_node(
    slurm_cluster, open_login_node, slurm_table, no_local_slurm
):
    address = _outside_address()
    config = {
        "ssh": {"hpc": open_login_node.kernel_table()},
        "slurm": {"k": {**slurm_table, "login": "hpc", "login_ip": address}},
    }
    async with _hub(config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        state = kernel.manager.describe()
        # The nanny dialed the login node's outside address; the kernel bound the node's
        # address on that route, and the client still uses local tunnel ports only.
        assert state["route"] == "login" and state["remote_info"]["ip"] == address
        assert kernel.connection_info["ip"] == "127.0.0.1"
        async with kernel.client() as client:
            _, text = await execute_output(client, "print('dialed back')", timeout=60)
        assert text.strip() == "dialed back"
        await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, state["job_id"])


@pytest.mark.asyncio
async def test_restart_on_request_through_the_login_node_is_a_new_job(slurm_cluster, login_config):
    async with _hub(login_config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        old = kernel.manager.describe()
        async with kernel.client() as client:  # made before the restart, used after it
            await client.execute("x = 1", timeout=60)
            await kernel.restart()
            new = kernel.manager.describe()
            assert new["job_id"] != old["job_id"] and new["route"] == "login"
            assert isinstance(kernel.manager.cli.runner, LoginRunner)
            # The client follows the kernel to its new job's tunnels: local ports only.
            assert kernel.connection_info["ip"] == "127.0.0.1"
            await client.wait_for_ready(60)
            _, text = await execute_output(client, "print('x' in dir())", timeout=60)
        assert text.strip() == "False"  # a new kernel
        assert await _gone_from_queue(slurm_cluster, old["job_id"])
        assert not Path(old["job_dir"]).exists()
        assert len(pool_snapshot()) == 1  # still one connection to the login node
        await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, new["job_id"])
    assert pool_snapshot() == []


@pytest.mark.asyncio
async def test_restart_in_place_through_the_login_node_keeps_the_job(slurm_cluster, login_config):
    async with _hub(login_config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120, restart=False)
        manager = kernel.manager
        before = manager.describe()
        async with kernel.client() as client:
            await client.execute("x = 1", timeout=60)
            pid = await manager.restart()  # through the nanny, over the tunnels
            after = manager.describe()
            assert after["job_id"] == before["job_id"] and after["kernel_pid"] == pid
            assert pid != before["kernel_pid"]
            assert kernel.connection_info == manager.connection_info  # the same local ports
            await client.wait_for_ready(60)
            _, text = await execute_output(client, "print('x' in dir())", timeout=60)
        assert text.strip() == "False"
        assert slurm_cluster.jobs() == [before["job_id"]]
        await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, before["job_id"])


@pytest.mark.asyncio
async def test_interrupt_by_scancel_over_ssh_when_the_nanny_does_not_answer(
    slurm_cluster, login_config, monkeypatch
):
    async with _hub(login_config) as hub:
        kernel = await hub.launch("slurm/k", ready_timeout=120)
        manager = kernel.manager
        job_id = manager.describe()["job_id"]
        sent = []
        run = LoginRunner.run

        async def recording(self, argv, *, input=None, timeout=30.0):
            sent.append(list(argv))
            return await run(self, argv, input=input, timeout=timeout)

        async def no_answer():
            raise KernelHubError("the nanny does not answer (test)")

        monkeypatch.setattr(LoginRunner, "run", recording)
        monkeypatch.setattr(manager.nanny, "interrupt", no_answer)
        async with kernel.client() as client:
            # The interrupt goes by `scancel --batch --signal=INT` on the login node; the
            # dial-back nanny relays SIGINT to the kernel.
            reply = await interrupt_busy_loop(
                client,
                "import time\nprint('go', flush=True)\nwhile True: time.sleep(0.05)",
                timeout=60,
                interrupt_timeout=30,
            )
        assert reply.content["status"] == "error"
        assert reply.content["ename"] == "KeyboardInterrupt"
        assert ["scancel", "--signal=INT", "--batch", job_id] in sent
        assert job_id in slurm_cluster.jobs()  # an interrupt, not an end
        await kernel.shutdown()
    assert await _gone_from_queue(slurm_cluster, job_id)
