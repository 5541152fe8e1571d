"""The registration handshake (JEP 66) on a remote host over SSH, with a real xeus-python 0.19.

A type whose table says ``kernel_protocol_version = "5.6"`` (or a launch with
``params={"registration": True}``) gets a remote nanny started with
``--registration``: the kernel binds its own ports on the remote host and reports
them, and the tunnels lead to what it reported. The "remote" Python is a venv with
xeus-python and pyzmq only (the ``xeus_python`` fixture). Some tables run the kernel
through :data:`SNAPSHOT`, which first copies the file the kernel is given, so a test
sees that it held no port.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import kernel_hub_ssh.plugin as plugin
import pytest
import pytest_asyncio
from kernel_hub_ssh.config import parse_config
from kernel_hub_ssh.connection import pool_snapshot
from kernel_hub_ssh.remote_launch import nanny_command
from kernel_hub_ssh_testing import processes_running, wait_gone

from kernel_hub import KernelHub, LaunchError
from kernel_hub.contract.errors import ConfigError
from kernel_hub.testing import EventRecorder, ProviderConformance, execute_output

#: The kernel's five channels, as named in a connection file.
PORTS = ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]

#: ``sh -c SNAPSHOT snap FILE DIR ARGV...``: copy FILE into DIR as ``<n>.json`` and write its
#: path into ``<n>.path`` (n: one more each start), then run ARGV in the shell's place.
SNAPSHOT = (
    'n=$(ls "$2" | grep -c "json$"); cp "$1" "$2/$n.json" && echo "$1" > "$2/$n.path" '
    '&& shift 2 && exec "$@"'
)

#: Generous: a kernel starts in a second or two alone, and the machine is shared.
TIMEOUT = 120


def xpython(python: Path) -> list[str]:
    """Return the argv of xeus-python 0.19 on *python* (its kernelspec runs the module)."""
    return [str(python), "-m", "xpython_launcher", "-f", "{connection_file}"]


def ipykernel(python: Path) -> list[str]:
    return [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]


def snapshot(snaps: Path, argv: list[str]) -> list[str]:
    """Return *argv* run through :data:`SNAPSHOT` into *snaps*."""
    return ["/bin/sh", "-c", SNAPSHOT, "snap", "{connection_file}", str(snaps), *argv]


def given(snaps: Path, n: int) -> dict:
    """Return the file the *n*-th start was given."""
    return json.loads((snaps / f"{n}.json").read_text())


def given_path(snaps: Path, n: int) -> str:
    return (snaps / f"{n}.path").read_text().strip()


def listening_ports(pid: int) -> set[int]:
    """Return the TCP ports process *pid* listens on (the "remote" host is this machine)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN, one of its sockets
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def bound_by_the_kernel(state: dict) -> dict[str, int]:
    """Return the state's remote kernel ports, checking that the kernel itself listens there."""
    remote = {p: state["remote_ports"][p] for p in PORTS}
    bound = listening_ports(state["kernel_pid"])
    assert set(remote.values()) <= bound, (remote, bound)
    return remote


def venv_procs(python: Path) -> list[int]:
    return [pid for pid, _ in processes_running(str(python.parent.parent))]


async def answers(kernel) -> None:
    async with kernel.client() as client:
        reply, text = await execute_output(client, "print(6*7)", timeout=TIMEOUT)
    assert reply["status"] == "ok" and text.strip() == "42", (reply, text)


# ---- config and command line (no sshd needed) ----


def test_a_table_declares_the_kernel_and_its_protocol_as_a_kernelspec_does():
    table = {
        "host": "box",
        "python": "/opt/x/bin/python",
        "argv": ["{prefix}/bin/python", "-m", "xpython_launcher", "-f", "{connection_file}"],
        "kernel_protocol_version": "5.6",
    }
    (kc,) = parse_config({"x": table}).values()
    kt = kc.kernel_type()
    assert kt.argv == tuple(table["argv"])
    assert kt.metadata == {
        "host": "box",
        "python": "/opt/x/bin/python",
        "kernel_protocol_version": "5.6",
    }
    # Without them: ipykernel on python, and no protocol version (today's type, unchanged).
    (plain,) = parse_config({"p": {"host": "box"}}).values()
    assert plain.kernel_type().argv == (
        "python3",
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    )
    assert "kernel_protocol_version" not in plain.kernel_type().metadata


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("argv", ["xpython"], "[ssh.x] field 'argv' must contain '{connection_file}'"),
        (
            "kernel_protocol_version",
            "five",
            "[ssh.x] field 'kernel_protocol_version' 'five' is not",
        ),
    ],
)
def test_bad_kernel_fields_name_the_fix(field, value, problem):
    with pytest.raises(ConfigError) as err:
        parse_config({"x": {"host": "box", field: value}}, strict=True)
    assert problem in str(err.value), str(err.value)


def test_the_nanny_gets_argv_and_registration_only_when_asked():
    plain = nanny_command("python3", kernel_name="k")
    assert "--argv" not in plain and "--registration" not in plain
    cmd = nanny_command(
        "python3", argv=["xpython", "-f", "{connection_file}"], registration_timeout=7.5
    )
    assert '--argv \'["xpython", "-f", "{connection_file}"]\'' in cmd
    assert "--registration --registration-timeout 7.5" in cmd


# ---- real kernels over real SSH ----


def sshmark(fn):
    """Mark a test that needs sshd and starts a real third-party kernel."""
    return pytest.mark.ssh(pytest.mark.integration(pytest.mark.thirdparty(pytest.mark.asyncio(fn))))


@pytest.fixture
def snaps(tmp_path: Path) -> Path:
    path = tmp_path / "snapshots"
    path.mkdir()
    return path


@pytest.fixture
def tables(sshd, xeus_python, remote_python, snaps) -> dict:
    return {
        # xeus-python, declared as a kernelspec of protocol 5.6 would be.
        "xsnap": sshd.kernel_table(
            python=str(xeus_python),
            argv=snapshot(snaps, xpython(xeus_python)),
            kernel_protocol_version="5.6",
            connect_timeout=15,
        ),
        # ipykernel (no handshake) that claims 5.6: it never reports.
        "claims": sshd.kernel_table(
            python=str(remote_python),
            argv=snapshot(snaps, ipykernel(remote_python)),
            kernel_protocol_version="5.6",
            connect_timeout=15,
        ),
        # ipykernel as it always was, through the snapshot.
        "plain": sshd.kernel_table(
            python=str(remote_python),
            argv=snapshot(snaps, ipykernel(remote_python)),
            connect_timeout=15,
        ),
    }


@pytest_asyncio.fixture
async def hub(tables, xeus_python, remote_python):
    async with KernelHub(config={"ssh": tables}, plugins=[plugin], load_entrypoints=False) as h:
        yield h
    assert not h.kernels
    assert wait_gone([*venv_procs(xeus_python), *venv_procs(remote_python)]) == []
    assert pool_snapshot() == []


@sshmark
@pytest.mark.timeout(600)
async def test_the_remote_kernel_binds_and_reports_its_ports(hub, snaps, xeus_python):
    rec = EventRecorder(hub)
    kernel = await hub.launch("ssh/xsnap", ready_timeout=TIMEOUT, restart=False)
    workdirs = []
    try:
        state = kernel.describe()["state"]
        workdirs.append(state["workdir"])
        first = given(snaps, 0)
        # No port was chosen for it: its file names the nanny's registration socket only.
        assert not set(PORTS) & set(first), first
        assert first["registration_ip"] == "127.0.0.1" and first["registration_port"].isdigit()
        assert os.path.dirname(given_path(snaps, 0)) == state["workdir"]
        # The ports the nanny handed on (and the tunnels lead to) are the ones the kernel
        # bound itself: it was given none, so they came from its report.
        remote = bound_by_the_kernel(state)
        nanny_argv = Path(f"/proc/{state['nanny_pid']}/cmdline").read_bytes().split(b"\0")
        assert b"--registration" in nanny_argv, nanny_argv
        local = {p: kernel.connection_info[p] for p in PORTS}
        assert local != remote  # the client talks to the tunnels' local ends
        progress = [e.data["message"] for e in rec.of(kernel.id, "progress")]
        assert any("the kernel reports its ports" in m for m in progress), progress
        await answers(kernel)

        # In place, through the nanny: the kernel is given the ports it reported.
        await kernel.manager.restart()
        await answers(kernel)  # the new process answers: it took its file long before
        again = given(snaps, 1)
        assert {p: again[p] for p in PORTS} == remote
        assert "registration_port" not in again
        assert bound_by_the_kernel(kernel.manager.describe()) == remote

        # A relaunch (a new nanny): a new handshake with the same key; clients keep their
        # local ports (the tunnels' far ends moved).
        await kernel.restart()
        state = kernel.describe()["state"]
        workdirs.append(state["workdir"])
        third = given(snaps, 2)
        assert not set(PORTS) & set(third) and third["key"] == first["key"]
        bound_by_the_kernel(state)
        assert {p: kernel.connection_info[p] for p in PORTS} == local
        assert not rec.of(kernel.id, "connection_changed")
        await answers(kernel)
    finally:
        rec.close()
        await kernel.shutdown()
    assert wait_gone(venv_procs(xeus_python)) == []
    for workdir in workdirs:
        assert not os.path.exists(workdir), workdir


@sshmark
async def test_a_kernel_that_never_reports_fails_naming_the_type_and_leaves_nothing(
    hub, snaps, remote_python
):
    with pytest.raises(LaunchError) as err:
        await hub.launch("ssh/claims", params={"registration_timeout": 3}, ready_timeout=TIMEOUT)
    message = str(err.value)
    assert message.startswith("cannot start kernel ssh/claims on "), message
    assert "did not report its ports on the registration socket within 3 s" in message
    assert 'kernel_protocol_version = "5.6" in [ssh.claims]: remove that line' in message
    # The kernel was started (and given no ports), then ended with its work dir.
    assert not set(PORTS) & set(given(snaps, 0))
    workdir = os.path.dirname(given_path(snaps, 0))
    assert wait_gone(venv_procs(remote_python)) == []
    assert not os.path.exists(workdir), workdir
    assert not hub.kernels


@sshmark
@pytest.mark.timeout(300)
async def test_the_launch_param_turns_the_handshake_on_and_off(hub, snaps, remote_python):
    # A type that claims 5.6, launched without the handshake: given its ports, it works.
    kernel = await hub.launch("ssh/claims", params={"registration": False}, ready_timeout=TIMEOUT)
    try:
        state = kernel.describe()["state"]
        assert {p: given(snaps, 0)[p] for p in PORTS} == bound_by_the_kernel(state)
        await answers(kernel)
    finally:
        await kernel.shutdown()
    # A plain type opted in by the launch: ipykernel never reports; the nanny's own words say
    # how to launch it without (the table asked for nothing).
    with pytest.raises(LaunchError) as err:
        await hub.launch(
            "ssh/plain",
            params={"registration": True, "registration_timeout": 2},
            ready_timeout=TIMEOUT,
        )
    assert "launch param registration=false" in str(err.value)
    assert "[ssh.plain]" not in str(err.value)
    # A bad param fails before anything is started.
    with pytest.raises(
        LaunchError, match="cannot launch ssh/plain: launch param 'registration' must"
    ):
        await hub.launch("ssh/plain", params={"registration": "yes"})
    assert sorted(p.name for p in snaps.iterdir()) == ["0.json", "0.path", "1.json", "1.path"]


@sshmark
async def test_a_type_without_the_handshake_is_given_its_ports_as_before(hub, snaps):
    kernel = await hub.launch("ssh/plain", ready_timeout=TIMEOUT)
    try:
        state = kernel.describe()["state"]
        first = given(snaps, 0)
        assert "registration_port" not in first
        assert {p: first[p] for p in PORTS} == bound_by_the_kernel(state)
        await answers(kernel)
    finally:
        await kernel.shutdown()


class TestSSHRegistrationConformance(ProviderConformance):
    """The conformance battery on xeus-python 0.19 over SSH, with the handshake."""

    pytestmark = [pytest.mark.ssh, pytest.mark.thirdparty]
    plugins = [plugin]
    type_ids = ["ssh/xpython"]
    local_kernels = False  # the state's pids and paths are the remote host's
    # xeus-python 0.19 has no interrupt (docs/kernels.md): it answers interrupt_request "ok"
    # and goes on, and SIGINT ends it. The battery's busy-loop interrupt does not apply;
    # its restarts are tested above.
    test_interrupt_busy_loop = None

    @pytest.fixture
    def conformance_setup(self, sshd, xeus_python):
        table = sshd.kernel_table(
            python=str(xeus_python),
            argv=xpython(xeus_python),
            kernel_protocol_version="5.6",
            interrupt_mode="message",
            connect_timeout=15,
        )
        return {"ssh": {"xpython": table}}

    async def assert_nothing_left(self, kernel, state):
        await super().assert_nothing_left(kernel, state)
        pids = [state[k] for k in ("nanny_pid", "kernel_pid") if state.get(k)]
        alive = await asyncio.to_thread(wait_gone, pids, self.timeout)
        assert not alive, f"remote processes {alive} outlived {kernel.type_id} ({state})"
        assert not os.path.exists(state["workdir"]), f"remote workdir {state['workdir']} left"
        infos = (kernel.connection_info, kernel.manager.connection_info)
        ports = {v for info in infos for k, v in info.items() if k.endswith("_port")}
        for port in sorted(ports):
            with pytest.raises(ConnectionRefusedError), socket.socket() as s:
                s.connect(("127.0.0.1", port))
