"""CurveZMQ transport encryption (issue 24, item 1): real ipykernel 7.4 and jupyter_client 8.10."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from kernel_hub import KernelHub, LaunchError, LaunchRequest
from kernel_hub.provider import (
    KernelType,
    curve_for,
    hookimpl,
    launch_subprocess,
    local_make_manager,
    new_connection_info,
)
from kernel_hub.testing import NannyProcess, Sniffer, wait_pid_gone
from kernel_hub.wire.connection import redact_keys

PYTHON = "ipykernel/python3"
WARNING = "running over TCP without encryption"


def marker_in(messages: list[list[bytes]], marker: bytes) -> bool:
    return any(marker in frame for frames in messages for frame in frames)


def log_of(kernel) -> str:
    with open(kernel.state["log_file"], encoding="utf-8") as f:
        return f.read()


# ---- unit: the policy, the keys, the redaction ----


def plain_type(**metadata) -> KernelType:
    return KernelType(provider="t", name="k", argv=("x",), metadata=metadata)


def test_curve_for_follows_the_policy_and_the_declared_support():
    curve = plain_type(supported_encryption=["curve"])
    assert curve_for(curve, "auto") and curve_for(curve, "required")
    assert not curve_for(curve, "disabled")
    assert curve_for(plain_type(supported_encryption="Curve"), "auto")  # as jupyter_client reads
    assert not curve_for(plain_type(), "auto") and not curve_for(plain_type(), "disabled")
    with pytest.raises(LaunchError, match="t/k does not declare CurveZMQ support") as info:
        curve_for(plain_type(), "required")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["yes", True, 0, "Auto "])
def test_a_bad_policy_is_a_one_line_error_naming_the_choices(bad):
    with pytest.raises(ValueError, match="transport_encryption must be 'disabled', 'auto'"):
        KernelHub(config={}, load_entrypoints=False, transport_encryption=bad)
    with pytest.raises(ValueError, match="launch transport_encryption"):
        LaunchRequest(kernel_id="k1", transport_encryption=bad)


def test_the_transport_table_sets_the_policy_per_type_over_the_host_and_names_typos():
    config = {"transport": {"encryption": "disabled", "spec/legacy": {"encryption": "required"}}}
    hub = KernelHub(config=config, load_entrypoints=False)
    assert hub.transport_encryption == "disabled"
    assert hub.encryption_for("spec/legacy") == "required"
    assert hub.encryption_for("spec/other") == "disabled"
    # The host's choice comes before [transport], after the type's own table.
    hub = KernelHub(config=config, load_entrypoints=False, transport_encryption="auto")
    assert hub.encryption_for("spec/other") == "auto"
    assert hub.encryption_for("spec/legacy") == "required"
    assert hub.configured_encryption("spec/other") == "disabled"
    # Silent config: auto; and no config says nothing of a type.
    bare = KernelHub(config={}, load_entrypoints=False)
    assert bare.encryption_for("spec/x") == "auto" and bare.configured_encryption("spec/x") is None
    from kernel_hub.plugins.transport import SCHEMA

    parsed = SCHEMA.parse({"encryption": "yes", "spec/bad": {"encrpytion": "auto"}})
    assert parsed.settings.encryption is None  # a bad value falls back to the default
    assert [p for p in parsed.problems if "'disabled', 'auto' or 'required'" in str(p)]
    assert [p for p in parsed.problems if "did you mean 'encryption'" in str(p)]
    assert all("\n" not in str(p) for p in parsed.problems)


def test_config_check_reports_the_transport_table(tmp_path):
    from kernel_hub.testing import run_cli

    path = tmp_path / "config.toml"
    path.write_text(
        '[transport]\nencryption = "required"\n[transport."ssh/gpu"]\nencryption = "no"\n'
    )
    result = run_cli("config", "check", env={"KERNEL_HUB_CONFIG": str(path)})
    assert result.returncode == 2, result
    assert "[transport]  ok" in result.stdout
    assert '[transport."ssh/gpu"]' in result.stdout and "encryption" in result.stdout


def test_keys_are_new_per_kernel_kept_by_a_relaunch_and_redacted_in_text():
    first = new_connection_info(curve=True)
    other = new_connection_info(curve=True)
    assert len(first["curve_publickey"]) == len(first["curve_secretkey"]) == 40  # Z85 of 32 bytes
    assert first["curve_publickey"] != other["curve_publickey"]
    again = new_connection_info(curve=True, reuse=first)
    assert again["curve_secretkey"] == first["curve_secretkey"]
    assert "curve_publickey" not in new_connection_info(reuse=first)  # disabled: none
    text = redact_keys(json.dumps(dict(first))) + redact_keys(str(dict(first)))
    assert first["curve_secretkey"] not in text and first["curve_publickey"] not in text


def test_a_started_kernels_repr_shows_no_key():
    """``Started`` reaches hosts' callbacks (``on_launched``), which may log it."""
    from types import SimpleNamespace

    from kernel_hub.lifecycle.starter import Started

    info = new_connection_info(curve=True)
    shown = repr(Started(info, {"pid": 1}, SimpleNamespace(kind="manager")))
    assert info["key"] not in shown and info["curve_secretkey"] not in shown
    assert "pid" in shown


def test_the_ipykernel_type_declares_curve_from_the_installed_version(monkeypatch):
    launcher = pytest.importorskip("kernel_hub_ipykernel.launcher")
    assert launcher.installed_ipykernel_version() >= (7, 4)  # the venv's, from its dist-info
    for version, declared in (((7, 4), True), ((7, 10), True), ((6, 17), False), (None, False)):
        monkeypatch.setattr(launcher, "installed_ipykernel_version", lambda v=version: v)
        kt = launcher.find_ipykernel_types()[0]
        assert ("curve" in kt.metadata.get("supported_encryption", ())) is declared


# ---- real kernels ----


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.parametrize("policy", ["disabled", "auto"])
async def test_a_keyless_sniffer_reads_a_plain_kernel_and_nothing_of_an_encrypted_one(policy):
    encrypted = policy == "auto"
    marker = f"curve-{policy}-{os.getpid()}".encode()
    async with KernelHub(config={}, transport_encryption=policy) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        info = kernel.connection_info
        assert ("curve_publickey" in info) is encrypted
        # ipykernel 7.4 warns at every plain start; never for a kernel with keys.
        assert (WARNING in log_of(kernel)) is not encrypted
        sniffer = Sniffer(info)
        try:
            # The handshake is the event: it fails against a Curve server.
            assert sniffer.handshake("iopub") is not encrypted
            assert sniffer.handshake("shell") is not encrypted
            async with kernel.client() as client:
                if encrypted:
                    lines = []
                    await client.execute(
                        f"print({marker.decode()!r})", output_hook=lines.append, timeout=60
                    )
                    assert any(marker.decode() in str(m.content) for m in lines)
                    # The output reached the kernel's own client: the sniffer got nothing.
                    assert sniffer.received("iopub") == []
                    assert sniffer.received("shell") == []
                else:
                    # A SUB's subscription lands a moment after its handshake: print until seen.
                    seen = False
                    for _ in range(120):
                        await client.execute(f"print({marker.decode()!r})", timeout=60)
                        got = await asyncio.to_thread(sniffer.received, "iopub", wait=0.5)
                        if marker_in(got, marker):
                            seen = True
                            break
                    assert seen, "a plain kernel's IOPub is readable by anyone"
                    sniffer.ask_kernel_info(info["key"])
                    reply = await asyncio.to_thread(sniffer.received, "shell", wait=60)
                    assert marker_in(reply, b"kernel_info_reply")
        finally:
            sniffer.close()
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.parametrize(("option", "encrypted"), [((), True), (("disabled",), False)])
def test_kernel_hub_launch_follows_the_config_and_its_option_wins(tmp_path, option, encrypted):
    """``launch`` stays plain for jupyter console unless the config or the option says."""
    import signal
    import subprocess

    path = tmp_path / "config.toml"
    path.write_text('[transport."ipykernel/python3"]\nencryption = "required"\n')
    flags = ["--transport-encryption", *option] if option else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernel_hub", "launch", PYTHON, "--json", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "KERNEL_HUB_CONFIG": str(path)},
    )
    try:
        assert proc.stdout is not None
        described = json.loads(proc.stdout.readline())
        assert ("curve_publickey" in described["connection_info"]) is encrypted
        with open(described["connection_file"], encoding="utf-8") as f:
            on_disk = json.load(f)
        assert ("curve_secretkey" in on_disk) is encrypted
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_wrong_server_key_is_refused_and_the_right_one_works():
    import zmq

    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        info = kernel.connection_info
        wrong = Sniffer(info, server_key=zmq.curve_keypair()[0])
        right = Sniffer(info, server_key=info["curve_publickey"].encode())
        try:
            assert wrong.handshake("shell") is False
            assert wrong.handshake("iopub") is False
            assert right.handshake("shell") is True
            right.ask_kernel_info(info["key"])
            reply = await asyncio.to_thread(right.received, "shell", wait=60)
            assert marker_in(reply, b"kernel_info_reply")
        finally:
            wrong.close()
            right.close()
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_clients_monitor_and_heartbeat_speak_curve_and_a_restart_keeps_the_keys():
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON)
        before = dict(kernel.connection_info)
        assert before["curve_secretkey"]
        with open(kernel.state["connection_file"], encoding="utf-8") as f:
            assert json.load(f)["curve_secretkey"] == before["curve_secretkey"]
        assert os.stat(kernel.state["connection_file"]).st_mode & 0o777 == 0o600
        blocking = await asyncio.to_thread(kernel.blocking_client)
        try:
            async with kernel.client() as client:
                await client.execute("x = 41", timeout=60)
                # The monitor's own SUB is a Curve client too: it sees the status.
                assert await kernel.wait_for_execution_state("idle", timeout=60) == "idle"
                assert await asyncio.to_thread(blocking.execute, "x += 1", timeout=60)
                await kernel.restart()
                assert kernel.connection_info["curve_publickey"] == before["curve_publickey"]
                assert kernel.connection_info["shell_port"] == before["shell_port"]
                # Clients made before the restart reach the new process, with the same keys.
                lines = []
                await client.execute("print('back')", output_hook=lines.append, timeout=60)
                assert any("back" in str(m.content) for m in lines)
                assert await asyncio.to_thread(blocking.execute, "1", timeout=60)
        finally:
            await asyncio.to_thread(blocking.close)
        from kernel_hub.managers.liveness import heartbeat_answers

        assert await asyncio.to_thread(heartbeat_answers, kernel.connection_info, 30)
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_jupyter_clients_blocking_client_talks_to_a_kernel_hub_kernel_from_its_file():
    jc = pytest.importorskip("jupyter_client")
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        assert "curve_publickey" in kernel.connection_info

        def talk() -> str:
            kc = jc.BlockingKernelClient(connection_file=kernel.state["connection_file"])
            kc.load_connection_file()
            assert kc.curve_publickey is not None  # it read the keys from the file
            kc.start_channels()
            try:
                kc.wait_for_ready(timeout=60)
                out: list[str] = []

                def hook(msg) -> None:
                    if msg["msg_type"] == "stream":
                        out.append(msg["content"]["text"])

                reply = kc.execute_interactive("print(6 * 7)", output_hook=hook, timeout=60)
                assert reply["content"]["status"] == "ok"
                return "".join(out)
            finally:
                kc.stop_channels()
                # jupyter_client's blocking client made an event loop in this thread.
                with contextlib.suppress(RuntimeError):
                    asyncio.get_event_loop_policy().get_event_loop().close()
                asyncio.set_event_loop(None)

        assert (await asyncio.to_thread(talk)).strip() == "42"
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kernel_hubs_client_talks_to_a_jupyter_client_kernel_with_curve():
    jc = pytest.importorskip("jupyter_client")
    from kernel_hub import AsyncKernelClient

    km = jc.AsyncKernelManager(kernel_name="python3", transport_encryption="auto")
    await km.start_kernel()
    try:
        info = km.get_connection_info()
        assert info.get("curve_publickey"), "jupyter_client provisioned no Curve keys"
        sniffer = Sniffer(info)
        try:
            assert await asyncio.to_thread(sniffer.handshake, "shell") is False
        finally:
            sniffer.close()
        async with AsyncKernelClient(info) as client:
            await client.wait_for_ready(60)
            lines = []
            await client.execute("print('from jc')", output_hook=lines.append, timeout=60)
            assert any("from jc" in str(m.content) for m in lines)
    finally:
        await km.shutdown_kernel(now=True)


class NoCurvePlugin:
    """``nocurve/plain``: ipykernel 7.4 under a type that declares nothing (a plain kernel)."""

    kernel_type = KernelType(
        provider="nocurve",
        name="plain",
        argv=(sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"),
    )

    @hookimpl
    def find_kernel_types(self, hub):
        return [self.kernel_type]

    @hookimpl
    def launch(self, hub, kernel_type, request):
        return launch_subprocess(kernel_type, request)

    @hookimpl
    def make_manager(self, hub, kernel_type, connection_info, state):
        return local_make_manager(hub, kernel_type, connection_info, state)


class IgnoringPlugin(NoCurvePlugin):
    """``ignoring/k``: declares Curve, but its launch ignores the policy (an old plugin)."""

    kernel_type = dataclasses.replace(
        NoCurvePlugin.kernel_type,
        provider="ignoring",
        name="k",
        metadata={"supported_encryption": ["curve"]},
    )
    launched: list[int] = []

    @hookimpl
    def launch(self, hub, kernel_type, request):
        async def go():
            result = await launch_subprocess(
                dataclasses.replace(kernel_type, metadata={}),
                dataclasses.replace(request, transport_encryption="auto"),
            )
            self.launched.append(result.state["pid"])
            return result

        return go()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_required_refuses_a_kernel_that_cannot_and_auto_runs_it_plain():
    plugin = NoCurvePlugin()
    async with KernelHub(config={}, load_entrypoints=False, plugins=[plugin]) as hub:
        with pytest.raises(LaunchError) as info:
            await hub.launch("nocurve/plain", transport_encryption="required")
        message = str(info.value)
        assert "nocurve/plain does not declare CurveZMQ support" in message
        assert "\n" not in message and "'auto'" in message
        assert not hub.kernels
        kernel = await hub.launch("nocurve/plain")  # auto: plain, and it works
        assert "curve_publickey" not in kernel.connection_info
        async with kernel.client() as client:
            await client.execute("1", timeout=60)
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_required_ends_a_kernel_its_plugin_launched_without_keys():
    plugin = IgnoringPlugin()
    async with KernelHub(
        config={}, load_entrypoints=False, plugins=[plugin], transport_encryption="required"
    ) as hub:
        with pytest.raises(LaunchError, match="launched ignoring/k without CurveZMQ keys"):
            await hub.launch("ignoring/k", restart=False)
        assert not hub.kernels
    assert plugin.launched
    for pid in plugin.launched:
        await asyncio.to_thread(wait_pid_gone, pid, 30)


# ---- the nanny: its kernel and its own two sockets ----


def nanny_ports(info) -> dict:
    """The nanny's control and events ports, as a sniffer's shell and IOPub."""
    return {
        "ip": info["ip"],
        "shell_port": info["nanny_control_port"],
        "iopub_port": info["nanny_events_port"],
    }


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_local_nanny_kernel_and_the_nannys_sockets_are_encrypted_across_a_restart():
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, nanny=True)
        info = dict(kernel.connection_info)
        assert info["curve_publickey"] and kernel.nanny
        for ports in (info, nanny_ports(info)):
            sniffer = Sniffer(ports)
            try:
                assert await asyncio.to_thread(sniffer.handshake, "iopub") is False
                assert await asyncio.to_thread(sniffer.handshake, "shell") is False
            finally:
                sniffer.close()
        async with kernel.client() as client:
            await client.execute("1", timeout=60)
            await kernel.restart()  # a new nanny: the keys go to it in a file it deletes
            assert kernel.connection_info["curve_publickey"] == info["curve_publickey"]
            lines = []
            await client.execute("print('again')", output_hook=lines.append, timeout=60)
            assert any("again" in str(m.content) for m in lines)
        assert await kernel.manager.is_alive()  # the nanny link, a Curve client
        await kernel.shutdown()


@pytest.mark.integration
def test_the_nanny_decides_auto_itself_and_refuses_required_for_a_kernel_it_cannot_judge():
    from kernel_hub.testing import start_nanny

    nanny = start_nanny("--curve", "auto", "--lease", "60")
    try:
        info = nanny.handshake["connection_info"]
        assert info["curve_publickey"]  # this Python's ipykernel is 7.4
        with open(os.path.join(nanny.handshake["workdir"], "kernel.json")) as f:
            assert json.load(f)["curve_secretkey"] == info["curve_secretkey"]
        sniffer = Sniffer(nanny_ports(info))
        try:
            assert sniffer.handshake("shell") is False
        finally:
            sniffer.close()
    finally:
        nanny.stop()
    other = json.dumps(["/bin/sh", "-c", "exec sleep 60", "{connection_file}"])
    with pytest.raises(RuntimeError, match="'required', but the kernel is not this Python's"):
        start_nanny("--curve", "required", "--argv", other)
    plain = start_nanny("--curve", "auto", "--argv", other, "--lease", "60")
    try:
        assert "curve_publickey" not in plain.handshake["connection_info"]
    finally:
        plain.stop()


@pytest.mark.integration
def test_the_nanny_takes_a_relaunchs_keys_from_a_file_it_deletes(tmp_path):
    import zmq

    from kernel_hub.testing import start_nanny
    from kernel_hub.wire.connection import write_connection_file

    public, secret = (k.decode() for k in zmq.curve_keypair())
    keys = write_connection_file(
        {"curve_publickey": public, "curve_secretkey": secret}, tmp_path / "keys.json"
    )
    nanny = start_nanny("--curve", "on", "--curve-file", str(keys), "--lease", "60")
    try:
        assert not keys.exists()
        assert nanny.handshake["connection_info"]["curve_publickey"] == public
    finally:
        nanny.stop()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_kernel_that_ignores_its_keys_fails_at_once_not_after_the_timeout():
    """A type that declares Curve wrongly: the kernel listens plain and never answers a
    Curve client. The start fails as soon as a plain handshake shows it, naming the fix,
    instead of waiting out ready_timeout; the kernel is ended."""
    from kernel_hub.testing.protoplugin import FakeKernelPlugin

    class Misdeclared(FakeKernelPlugin):
        @hookimpl
        def find_kernel_types(self, hub):
            (kt,) = super().find_kernel_types(hub)
            return [dataclasses.replace(kt, metadata={"supported_encryption": ["curve"]})]

    hub = KernelHub(plugins=[Misdeclared()], load_entrypoints=False, config={})
    async with hub:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(LaunchError, match="does not speak CurveZMQ") as info:
            await hub.launch("fake/echo", ready_timeout=600)
        assert loop.time() - began < 300  # far below the timeout: the probe decided
        assert "transport_encryption='disabled'" in str(info.value)
        assert "\n" not in info.value.summary
        assert hub.kernels == {}
        # Plain, the same kernel starts.
        kernel = await hub.launch("fake/echo", transport_encryption="disabled")
        assert "curve_publickey" not in kernel.connection_info
        await kernel.shutdown()


def bootstrapped_nanny(*args: str, keys: dict, prelude: str = "") -> tuple[NannyProcess, str]:
    """Run the nanny as the local and SSH hosts do (``python -c BOOTSTRAP``, its code on
    stdin) with *keys* after the code; *prelude* runs first. Return it and its log so far."""
    from kernel_hub import nanny

    proc = subprocess.Popen(
        [sys.executable, "-c", prelude + nanny.BOOTSTRAP, *args, "--curve-file", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    proc.stdin.write(nanny.payload() + json.dumps(keys).encode() + b"\n")
    proc.stdin.close()
    # Not a daemon: the handshake line comes once the nanny serves, its log line by line.
    line = proc.stdout.readline()
    handshake = json.loads(line) if line else {"error": proc.stderr.read().decode()}
    if "error" in handshake:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        raise RuntimeError(handshake["error"])
    log = []
    while not log or "kernel started" not in log[-1]:
        log.append(proc.stderr.readline().decode())
    return NannyProcess(proc, handshake), "".join(log)


def stop(nanny: NannyProcess) -> None:
    nanny.stop()
    nanny.proc.stdout.close()
    nanny.proc.stderr.close()


def host_keys() -> dict[str, str]:
    """A CurveZMQ keypair as a host chooses one (connection-info fields)."""
    import zmq

    public, secret = (k.decode() for k in zmq.curve_keypair())
    return {"curve_publickey": public, "curve_secretkey": secret}


def keyless_handshake(info) -> bool:
    """Whether a client without keys completes the handshake on the kernel's shell port."""
    sniffer = Sniffer(info)
    try:
        return sniffer.handshake("shell")
    finally:
        sniffer.close()


# Reports, on the nanny's stderr, whether pyzmq was imported when the kernel started.
ZMQ_AT_KERNEL_START = """\
import subprocess as _sp, sys as _sys
_Popen = _sp.Popen
class _Watch(_Popen):
    def __init__(self, *a, **k):
        print("zmq imported at the kernel's start:", "zmq" in _sys.modules, file=_sys.stderr)
        super().__init__(*a, **k)
_sp.Popen = _Watch
"""


@pytest.mark.integration
def test_the_hosts_keys_on_stdin_let_the_kernel_start_before_pyzmq_is_imported():
    keys = host_keys()
    nanny, log = bootstrapped_nanny(
        "--curve", "on", "--lease", "60", keys=keys, prelude=ZMQ_AT_KERNEL_START
    )
    try:
        assert "zmq imported at the kernel's start: False" in log
        assert nanny.connection_info["curve_publickey"] == keys["curve_publickey"]
        with open(os.path.join(nanny.workdir, "kernel.json")) as f:
            assert json.load(f)["curve_secretkey"] == keys["curve_secretkey"]
        assert keyless_handshake(nanny.connection_info) is False  # the kernel: Curve, our keys
    finally:
        stop(nanny)
    # A kernel the nanny cannot judge (not this Python's ipykernel) runs plain under auto:
    # the host's keys go nowhere, not even into its connection file.
    other = json.dumps(["/bin/sh", "-c", "exec sleep 60", "{connection_file}"])
    plain, _ = bootstrapped_nanny("--curve", "auto", "--argv", other, "--lease", "60", keys=keys)
    try:
        assert "curve_publickey" not in plain.connection_info
        with open(os.path.join(plain.workdir, "kernel.json")) as f:
            assert "curve_secretkey" not in json.load(f)
    finally:
        stop(plain)


# The nanny's pyzmq, made to say it has no CurveZMQ (as one built without libsodium).
NO_CURVE = """\
import zmq as _z
_has = _z.has
_z.has = lambda feature: feature != "curve" and _has(feature)
"""


@pytest.mark.integration
def test_a_nanny_whose_pyzmq_has_no_curve_runs_auto_plain_and_refuses_on():
    keys = host_keys()
    nanny, _ = bootstrapped_nanny("--curve", "auto", "--lease", "60", keys=keys, prelude=NO_CURVE)
    try:
        assert "curve_publickey" not in nanny.connection_info
        with open(os.path.join(nanny.workdir, "kernel.json")) as f:
            assert "curve_secretkey" not in json.load(f)
        assert keyless_handshake(nanny.connection_info) is True  # plain
    finally:
        stop(nanny)
    with pytest.raises(RuntimeError, match="has no CurveZMQ"):
        bootstrapped_nanny("--curve", "on", "--lease", "60", keys=keys, prelude=NO_CURVE)
