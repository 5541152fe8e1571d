"""The registration handshake (JEP 66, protocol 5.6): the kernel binds its ports and reports them.

The real peer is xeus-python 0.19 (PyPI), through kernelspecs made here that say
``kernel_protocol_version: "5.6"``, and whose argv first copies the file the kernel
is given (so a test can see that it held no ports) and then runs the kernel itself.
docs/kernels.md says which of xeus-python's ways are the spec and which are its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from kernel_hub import KernelHub, LaunchError, RestartPolicy
from kernel_hub import nanny as nanny_module
from kernel_hub.conformance import execute_output
from kernel_hub.testing import EventRecorder, require_service
from kernel_hub.wire.connection import CHANNELS, runtime_dir
from kernel_hub.wire.registration import (
    Registration,
    RegistrationError,
    parse_report,
    registration_wanted,
)
from kernel_hub.wire.session import DELIM, Session

#: Generous: xeus-python starts in well under a second alone, and the machine is shared.
TIMEOUT = 120
FAST = RestartPolicy(limit=3, window=120, backoff_initial=0.1, backoff_max=0.5)
PORTS = [f"{c}_port" for c in CHANNELS]

#: argv prefix of the kernelspecs below: copy the file the kernel is given into a directory
#: (as <n>.json, one per start), then run the rest of argv (plus the file) in its place.
SNAPSHOT = (
    "import os, shutil, sys; f, d = sys.argv[1], sys.argv[2]; "
    "shutil.copy(f, os.path.join(d, f'{len(os.listdir(d))}.json')); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[3:], f])"
)

#: A kernel that follows the handshake's form but sends the report given in its argv.
BAD_KERNEL = """
import hashlib, hmac, json, sys, zmq
info = json.load(open(sys.argv[-1]))
report = sys.argv[1].encode()
sig = hmac.new(info["key"].encode(), report, hashlib.sha256).hexdigest().encode()
sock = zmq.Context().socket(zmq.DEALER)
sock.connect(f"tcp://{info['registration_ip']}:{info['registration_port']}")
sock.send_multipart([b"<IDS|MSG>", sig, report])
sock.poll(600_000)  # wait to be killed
"""

pytestmark = [pytest.mark.integration, pytest.mark.thirdparty]


# ---- pure parts ----


def test_report_ports_come_as_strings_or_numbers():
    report = {"kernel_id": "k", "shell_port": "5001", "iopub_port": 5002, "stdin_port": "5003"}
    report |= {"control_port": "5004", "hb_port": "5005"}
    assert parse_report(json.dumps(report).encode(), kernel_id="k") == {
        "shell_port": 5001,
        "iopub_port": 5002,
        "stdin_port": 5003,
        "control_port": 5004,
        "hb_port": 5005,
    }


GOOD = {"kernel_id": "k", **{p: str(5001 + i) for i, p in enumerate(PORTS)}}
MALFORMED = [
    pytest.param(b"not json", "not JSON", id="not-json"),
    pytest.param(b"[1, 2]", "not an object", id="list"),
    pytest.param(json.dumps({**GOOD, "kernel_id": "other"}).encode(), "'kernel_id'", id="id"),
    pytest.param(json.dumps({**GOOD, "hb_port": "abc"}).encode(), "'hb_port'", id="port-str"),
    pytest.param(json.dumps({**GOOD, "hb_port": 0}).encode(), "'hb_port'", id="port-0"),
    pytest.param(json.dumps({**GOOD, "hb_port": 70000}).encode(), "'hb_port'", id="port-big"),
    pytest.param(json.dumps({**GOOD, "hb_port": True}).encode(), "'hb_port'", id="port-bool"),
    pytest.param(json.dumps({**GOOD, "hb_port": 5.5}).encode(), "'hb_port'", id="port-float"),
    pytest.param(
        json.dumps({k: v for k, v in GOOD.items() if k != "stdin_port"}).encode(),
        "'stdin_port'",
        id="missing",
    ),
    pytest.param(json.dumps({**GOOD, "hb_port": "5001"}).encode(), "twice", id="duplicate"),
]


@pytest.mark.parametrize(("content", "problem"), MALFORMED)
def test_malformed_reports_are_refused_by_launcher_and_nanny_alike(content, problem):
    with pytest.raises(ValueError, match=problem):
        parse_report(content, kernel_id="k")
    # The nanny keeps its own copy (it imports nothing of kernel_hub): the same verdicts.
    with pytest.raises(ValueError, match=problem):
        nanny_module._parse_report(content, "k")
    assert nanny_module._parse_report(json.dumps(GOOD).encode(), "k") == parse_report(
        json.dumps(GOOD).encode(), kernel_id="k"
    )


def test_who_gets_the_handshake():
    assert registration_wanted({"kernel_protocol_version": "5.6"}, {})
    assert registration_wanted({"kernel_protocol_version": "6.0"}, {})
    assert not registration_wanted({"kernel_protocol_version": "5.5"}, {})
    assert not registration_wanted({"kernel_protocol_version": "five"}, {})
    assert not registration_wanted({}, {})
    assert registration_wanted({}, {"registration": True})  # the opt-in of one launch
    assert not registration_wanted({"kernel_protocol_version": "5.6"}, {"registration": False})
    with pytest.raises(LaunchError, match="'registration' must be true or false"):
        registration_wanted({}, {"registration": "yes"})


@pytest.mark.asyncio
async def test_unsigned_reports_are_dropped_and_a_signed_one_is_acknowledged():
    with Registration(kernel_id="k", key="secret", label="kernel t/x") as reg:
        assert repr(reg) == f"<Registration 127.0.0.1:{reg.port} [OPEN]>"
        session = Session("secret")
        good = json.dumps(GOOD).encode()
        waiting = asyncio.ensure_future(reg.wait(timeout=TIMEOUT))
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(f"tcp://127.0.0.1:{reg.port}")
        try:
            sock.send_multipart([DELIM, b"0" * 64, good])  # wrong signature: dropped
            sock.send_multipart([good])  # no delimiter: dropped
            sock.send_multipart([DELIM, session.sign([good]), good])
            assert (await waiting)["shell_port"] == 5001
            assert reg.dropped == 2
            assert await asyncio.to_thread(sock.poll, TIMEOUT * 1000)
            delim, sig, ack = sock.recv_multipart()
            assert delim == DELIM and sig == session.sign([ack])  # xeus-python checks both
        finally:
            sock.close()
            ctx.term()
    assert repr(reg).endswith("[CLOSED]>")


@pytest.mark.parametrize("use_fd", [True, False], ids=["zmq-takes-the-fd", "older-libzmq"])
def test_the_nanny_holds_the_registration_port_before_it_imports_zmq(use_fd):
    """The nanny reserves the port with the standard library, starts the kernel, then hands
    the listening socket to ZeroMQ (ZMQ_USE_FD); a kernel that connected and reported before
    that is not lost. An older libzmq (no USE_FD) binds the same port anew."""
    import types

    import zmq

    nanny = nanny_module.Nanny(["true"], ip="127.0.0.1")
    fields = nanny._reserve_registration()
    port = int(fields["registration_port"])
    # Held already: nobody else can bind it now.
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", port))
    ctx = zmq.Context()
    kernel = ctx.socket(zmq.DEALER)
    kernel.linger = 0
    try:
        if use_fd:  # connects and reports while the nanny still imports zmq
            kernel.connect(f"tcp://127.0.0.1:{port}")
            kernel.send_multipart([DELIM, b"sig", b"report"])
        nanny._zmq = (
            zmq
            if use_fd
            else types.SimpleNamespace(
                ZMQError=zmq.ZMQError,
                **{name: getattr(zmq, name) for name in ("ROUTER", "MAXMSGSIZE", "LAST_ENDPOINT")},
            )
        )
        nanny._ctx = ctx
        nanny._open_registration()
        assert nanny._registration_listener is None
        if not use_fd:
            kernel.connect(f"tcp://127.0.0.1:{port}")
            kernel.send_multipart([DELIM, b"sig", b"report"])
        router = nanny._registration_sock
        assert router.poll(TIMEOUT * 1000)
        assert router.recv_multipart()[1:] == [DELIM, b"sig", b"report"]
    finally:
        kernel.close()
        if nanny._registration_sock is not None:
            nanny._registration_sock.close()
        ctx.term()


# ---- real kernels ----


@pytest.fixture
def specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Kernelspecs on a temporary ``JUPYTER_PATH``; yields the snapshot directory."""
    try:
        import xpython_launcher  # noqa: F401
    except ImportError:
        require_service("xeus-python", False, "pip install xeus-python")
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    kernels = tmp_path / "share" / "jupyter" / "kernels"
    snap = [sys.executable, "-c", SNAPSHOT, "{connection_file}", str(snaps)]
    bad = tmp_path / "bad_kernel.py"
    bad.write_text(BAD_KERNEL)
    for name, spec in {
        "kh-xpython-reg": {
            "argv": [*snap, "-m", "xpython_launcher", "-f"],
            "kernel_protocol_version": "5.6",
        },
        "kh-ipykernel-snap": {"argv": [*snap, "-m", "ipykernel_launcher", "-f"]},
        "kh-bad-report": {
            "argv": [sys.executable, str(bad), '{"kernel_id": 1}', "{connection_file}"],
            "kernel_protocol_version": "5.6",
        },
    }.items():
        (kernels / name).mkdir(parents=True)
        (kernels / name / "kernel.json").write_text(
            json.dumps({"display_name": name, "language": "python", **spec})
        )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    yield snaps


@pytest_asyncio.fixture
async def hub(specs: Path) -> AsyncIterator[KernelHub]:
    async with KernelHub(config={}) as hub:
        yield hub
    assert not hub.kernels


def _snapshot(snaps: Path, n: int) -> dict:
    return json.loads((snaps / f"{n}.json").read_text())


async def _answers(kernel) -> None:
    async with kernel.client() as c:
        reply, text = await execute_output(c, "print(6*7)", timeout=TIMEOUT)
    assert reply["status"] == "ok" and text.strip() == "42"


@pytest.mark.asyncio
@pytest.mark.timeout(300)
@pytest.mark.parametrize("nanny", [False, True], ids=["local", "nanny"])
async def test_kernel_binds_and_reports_its_ports(hub, specs, nanny):
    kernel = await hub.launch("spec/kh-xpython-reg", nanny=nanny, ready_timeout=TIMEOUT)
    try:
        given = _snapshot(specs, 0)
        # No port was chosen for it: the file it got names the registration socket only.
        assert not set(PORTS) & set(given), given
        assert given["registration_ip"] == "127.0.0.1"
        assert given["registration_port"].isdigit()  # a string: xeus-python 0.19 needs it
        assert given["ip"] == "127.0.0.1"  # not in the spec's file; xeus-python needs it
        info = kernel.connection_info
        assert all(isinstance(info[p], int) for p in PORTS)
        assert "registration_port" not in info
        await _answers(kernel)  # on the ports it reported
        if not nanny:
            # The file now is a classic connection file with the reported ports, 0600.
            path = kernel.state["connection_file"]
            on_disk = json.loads(Path(path).read_text())
            assert {p: on_disk[p] for p in PORTS} == {p: info[p] for p in PORTS}
            assert "registration_port" not in on_disk
            assert os.stat(path).st_mode & 0o777 == 0o600
    finally:
        await kernel.shutdown()


@pytest.mark.asyncio
@pytest.mark.timeout(300)
@pytest.mark.parametrize("nanny", [False, True], ids=["local", "nanny"])
async def test_restart_gives_the_kernel_its_reported_ports(hub, specs, nanny):
    rec = EventRecorder(hub)
    kernel = await hub.launch(
        "spec/kh-xpython-reg", nanny=nanny, restart=FAST, ready_timeout=TIMEOUT
    )
    try:
        before = {p: kernel.connection_info[p] for p in PORTS}
        pid = kernel.state["kernel_pid"] if nanny else kernel.state["pid"]
        os.kill(pid, signal.SIGKILL)
        await rec.wait_for("restarted", kernel.id, timeout=TIMEOUT)
        # Its file now gives it the ports it reported: no second handshake, same endpoint.
        again = _snapshot(specs, 1)
        assert {p: again[p] for p in PORTS} == before
        assert "registration_port" not in again
        assert {p: kernel.connection_info[p] for p in PORTS} == before
        assert not rec.of(kernel.id, "connection_changed")
        await _answers(kernel)
    finally:
        rec.close()
        await kernel.shutdown()


@pytest.mark.asyncio
@pytest.mark.timeout(300)
async def test_restart_with_a_port_taken_registers_again(hub, specs):
    rec = EventRecorder(hub)
    kernel = await hub.launch("spec/kh-xpython-reg", restart=FAST, ready_timeout=TIMEOUT)
    squatter = socket.socket()
    try:
        old_shell = kernel.connection_info["shell_port"]

        def squat(event) -> None:
            # On the hub's loop, between the old process's end and the relaunch: another
            # process takes the old shell port.
            if event.kind == "restarting" and event.kernel_id == kernel.id:
                squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                squatter.bind(("127.0.0.1", old_shell))
                squatter.listen(1)

        unsubscribe = hub.events.subscribe(squat)
        os.kill(kernel.state["pid"], signal.SIGKILL)
        changed = await rec.wait_for("connection_changed", kernel.id, timeout=TIMEOUT)
        unsubscribe()
        await rec.wait_for("restarted", kernel.id, timeout=TIMEOUT)
        again = _snapshot(specs, 1)
        assert not set(PORTS) & set(again)  # a new handshake, with the same key
        assert again["key"] == _snapshot(specs, 0)["key"]
        assert kernel.connection_info["shell_port"] != old_shell
        assert changed.data["shell_port"] == kernel.connection_info["shell_port"]
        await _answers(kernel)
    finally:
        squatter.close()
        rec.close()
        await kernel.shutdown()


def _left_behind(kernel_id: str) -> list[Path]:
    return list(runtime_dir().glob(f"kernel-{kernel_id}.*"))


@pytest.mark.asyncio
@pytest.mark.timeout(300)
@pytest.mark.parametrize("nanny", [False, True], ids=["local", "nanny"])
async def test_a_kernel_that_never_reports_times_out_naming_the_registration(hub, nanny):
    # ipykernel does not speak the handshake: opted in anyway, it never reports.
    with pytest.raises(LaunchError) as err:
        await hub.launch(
            "spec/kh-ipykernel-snap",
            nanny=nanny,
            kernel_id="kh-never-reports",
            params={"registration": True, "registration_timeout": 3},
            ready_timeout=TIMEOUT,
        )
    message = err.value.summary
    assert "report its ports on the registration socket" in message, message
    assert "registration" in message.split(";")[-1]  # and how to launch it without
    if not nanny:
        assert isinstance(err.value, RegistrationError)
    assert not _left_behind("kh-never-reports")
    assert not hub.kernels


@pytest.mark.asyncio
@pytest.mark.timeout(300)
@pytest.mark.parametrize("nanny", [False, True], ids=["local", "nanny"])
async def test_a_malformed_report_is_refused(hub, nanny):
    with pytest.raises(LaunchError) as err:
        await hub.launch(
            "spec/kh-bad-report", nanny=nanny, kernel_id="kh-bad-report", ready_timeout=TIMEOUT
        )
    message = err.value.summary
    assert "malformed registration report" in message, message
    assert "'kernel_id' is 1" in message
    assert "registration" in message.split(";")[-1]
    assert not _left_behind("kh-bad-report")


@pytest.mark.asyncio
@pytest.mark.timeout(300)
async def test_kernels_without_support_are_given_their_ports(hub, specs):
    kernel = await hub.launch("spec/kh-ipykernel-snap", ready_timeout=TIMEOUT)
    try:
        given = _snapshot(specs, 0)
        assert {p: given[p] for p in PORTS} == {p: kernel.connection_info[p] for p in PORTS}
        assert "registration_port" not in given
        await _answers(kernel)
    finally:
        await kernel.shutdown()
