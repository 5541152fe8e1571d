"""Fault injection: SIGKILL the host at many points of a launch; nothing may be left.

For each provider — local kernels (``spec``), ``kernel-hub launch`` (its key
file), a local nanny (``kernel-hub launch --nanny``), SSH (a real sshd) and
Docker (a real engine) — a host process launches a kernel and is killed with
SIGKILL at one chosen point: frozen inside a hub event callback (``starting``,
each ``progress`` step, ``ready``), after an execute, or the moment a file,
process or container of the launch appears. Then, within a bound, no process,
container, remote nanny or file holding a key may remain.

The local kernel is an ipykernel that has dropped ``JPY_PARENT_PID``: like
most kernels that are not ipykernel, it would never notice its host's death,
so only kernel_hub's own guards can end it.

Every process a run starts locally carries ``KH_FAULT_RUN=<token>`` in its
environment (kernels, nannies, the reaper and its helpers inherit it), which
is how leftovers are found whoever their parent is by now.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from kernel_hub.testing import processes_running, processes_with_env, require_service

pytestmark = [
    pytest.mark.faults,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.timeout(400),
]

#: The nannies' lease in these runs (the default is minutes).
LEASE = 3.0
#: Seconds for a launch to reach a kill point (the machine is shared and slow).
REACH = 120.0
#: A lease for runs that must not rely on it: far longer than any wait here.
NO_LEASE = 3600.0
#: Seconds the reaper may take to end what a killed host left (it acts at once; the machine
#: is shared and slow), far below the default lease (300 s).
REAPED = 30.0

#: The host: launch TYPE, freeze at the chosen point (a blocking read inside the hub's event
#: callback holds the launch exactly there) and wait to be killed.
HOST = textwrap.dedent(
    """
    import asyncio, json, sys
    from kernel_hub import KernelHub

    type_id, stop_at, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    nanny = sys.argv[4:] == ["nanny"]  # under a local nanny (hub.launch(nanny=True))

    def freeze(point):
        print("at", point, flush=True)
        sys.stdin.readline()  # frozen until the test kills this process

    def on_event(event):
        point = event.kind
        if event.kind == "progress":
            point += ":" + str(event.data.get("step"))
        print("event", point, flush=True)
        if point == stop_at:
            freeze(point)

    async def main():
        async with KernelHub(config=config) as hub:
            hub.events.subscribe(on_event)
            kernel = await hub.launch(type_id, restart=False, nanny=nanny)
            async with kernel.client() as client:
                await client.execute("x = 6 * 7", timeout=120)
            freeze("executed")  # also the end: observed points kill the host meanwhile

    asyncio.run(main())
    """
)

#: A kernel that does not watch its parent: ipykernel with JPY_PARENT_PID dropped.
ORPHAN = (
    "import os, sys\n"
    "os.environ.pop('JPY_PARENT_PID', None)\n"
    "from ipykernel.kernelapp import launch_new_instance\n"
    "sys.argv[:] = ['orphan-kernel', '-f', sys.argv[1]]\n"
    "launch_new_instance()\n"
)


@dataclass
class Run:
    """One host run: its private dirs, environment marker and, once started, the process."""

    root: Path
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: The nannies' lease: a run that must not rely on it sets one longer than any wait.
    lease: float = LEASE
    proc: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)
    log: IO[str] | None = None
    _pending: str = ""

    @property
    def marker(self) -> str:
        return f"KH_FAULT_RUN={self.token}"

    @property
    def runtime(self) -> Path:
        return self.root / "runtime"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def __post_init__(self) -> None:
        for d in (self.runtime, self.tmp, self.root / "share" / "kernels" / "orphan"):
            d.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        spec = {
            "argv": [sys.executable, "-c", ORPHAN, "{connection_file}"],
            "display_name": "orphan",
            "language": "python",
        }
        (self.root / "share" / "kernels" / "orphan" / "kernel.json").write_text(json.dumps(spec))
        (self.root / "empty.toml").write_text("")  # no config tables (a missing file is an error)
        return {
            **os.environ,
            "KH_FAULT_RUN": self.token,
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "JUPYTER_PATH": str(self.root / "share"),
            "TMPDIR": str(self.tmp),  # local nannies make their work dirs here
            "KERNEL_HUB_NANNY_LEASE": str(self.lease),
            "KERNEL_HUB_CONFIG": str(self.root / "empty.toml"),
        }

    def start(self, argv: list[str]) -> None:
        self.log = open(self.root / "host.log", "w")  # closed by kill()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=self.env(),
            start_new_session=True,
        )

    def read_until(self, wanted: Callable[[str], bool], timeout: float = REACH) -> None:
        """Read the host's stdout until a line satisfies *wanted*.

        Unbuffered (``os.read`` after ``select``): a buffered reader could hold the
        line we wait for while ``select`` waits for more bytes that never come.
        """
        import selectors

        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while "\n" in self._pending:
                    line, self._pending = self._pending.split("\n", 1)
                    self.lines.append(line.strip())
                    if wanted(line.strip()):
                        return
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    pytest.fail(f"the host did not get there in {timeout} s: {self.lines}")
                chunk = os.read(fd, 65536)
                if not chunk:
                    pytest.fail(f"the host exited first: {self.lines}\n{self.host_log()}")
                self._pending += chunk.decode(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stdout, self.log):
            if stream is not None:
                stream.close()

    def host_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.root / "host.log").read_text()[-3000:]
        return ""

    def local_leftovers(self) -> list[str]:
        """Processes with the marker, files in the runtime dir, local nanny work dirs."""
        out = [f"process {pid}: {cmdline(pid)[:200]}" for pid in processes_with_env(self.marker)]
        out += [f"file {p}" for p in sorted(self.runtime.iterdir())]
        out += [f"nanny work dir {p}" for p in sorted(self.tmp.glob("kernel-hub-nanny-*"))]
        return out


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    return "?"


def ours(workdir: Path, venv: str) -> bool:
    """Whether a nanny work dir is this run's: its nanny runs our venv's python, or is gone.

    (Other test runs on this machine may start nannies at the same time.)
    """
    try:
        pid = int((workdir / "nanny.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False  # being made or removed just now
    args = cmdline(pid)
    return args == "?" or venv in args


def processes_matching(marker: str, needle: str) -> list[int]:
    return [pid for pid in processes_with_env(marker) if needle in cmdline(pid)]


def observe(condition: Callable[[], bool], run: Run, timeout: float = REACH) -> None:
    """Watch for *condition* (a file, process or container appearing) and return once true.

    What is watched belongs to another process, which gives no event to wait on: it is
    looked at every 5 ms, which only decides how close to the moment the kill lands.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert run.proc is not None
        if run.proc.poll() is not None:
            pytest.fail(f"the host exited first: {run.lines}\n{run.host_log()}")
        if time.monotonic() > deadline:
            pytest.fail(f"not seen within {timeout} s; host said {run.lines}")
        time.sleep(0.005)


def leftovers_after(check: Callable[[], list[str]], bound: float) -> tuple[list[str], float]:
    """Return what is still left after *bound* seconds (or nothing, as soon as it is all gone)."""
    start = time.monotonic()
    left = check()
    while left and time.monotonic() - start < bound:
        time.sleep(0.1)  # observing processes and files of others, as above
        left = check()
    return left, time.monotonic() - start


def clean_up(run: Run) -> None:
    """Whatever a failed test left: kill it, so the suite leaves nothing either."""
    if run.proc is not None and run.proc.poll() is None:
        run.kill()
    for pid in processes_with_env(run.marker):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def run(tmp_path) -> Iterator[Run]:
    r = Run(tmp_path)
    yield r
    clean_up(r)


def host_argv(
    type_id: str, stop_at: str, config: dict | None = None, *, nanny: bool = False
) -> list[str]:
    argv = [sys.executable, "-c", HOST, type_id, stop_at, json.dumps(config or {})]
    return argv + (["nanny"] if nanny else [])


def kill_at(run: Run, point: str, observed: Callable[[], bool] | None) -> None:
    """Run the host until *point* (a frozen event) or until *observed* is true; SIGKILL it."""
    if observed is None:
        run.read_until(lambda line: line == f"at {point}")
    else:
        observe(observed, run)
    run.kill()


def report(provider: str, point: str, left: list[str], took: float) -> None:
    print(f"fault {provider} @ {point}: {'LEAK ' + str(left) if left else 'clean'} ({took:.2f} s)")


# ---- local kernels (the spec provider) ----

LOCAL_POINTS = ["starting", "connection file", "kernel process", "ready", "executed"]


@pytest.mark.parametrize("attempt", range(3))  # cheap, and the spawn window is narrow
@pytest.mark.parametrize("point", LOCAL_POINTS)
def test_local_kernel(run, point, attempt):
    observed = {
        "connection file": lambda: any(run.runtime.glob("kernel-*.json")),
        "kernel process": lambda: bool(processes_matching(run.marker, "orphan-kernel")),
    }.get(point)
    run.start(host_argv("spec/orphan", point))
    kill_at(run, point, observed)
    left, took = leftovers_after(run.local_leftovers, 15.0)
    report("local", point, left, took)
    assert not left


# ---- kernel-hub launch: its connection file holds the key ----


@pytest.mark.parametrize("point", ["connection file printed"])
def test_cli_launch(run, point):
    run.start([sys.executable, "-m", "kernel_hub", "launch", "spec/orphan"])
    run.read_until(lambda line: line.endswith(".json"))  # the path, once the file is written
    assert any(run.runtime.glob("kernel-hub-*.json"))
    run.kill()
    left, took = leftovers_after(run.local_leftovers, 15.0)
    report("cli", point, left, took)
    assert not left


# ---- kernel-hub launch --nanny ----

NANNY_POINTS = [
    "nanny process",
    "nanny work dir",
    "kernel process",
    "running",
    "running, reaper gone too",
]


@pytest.mark.parametrize("point", NANNY_POINTS)
def test_local_nanny(run, point):
    if point != "running, reaper gone too":
        # From the nanny's spawn on, the reaper knows it (issue #22 item 5): the lease is
        # not needed, so it is made longer than the wait below.
        run.lease = NO_LEASE
    observed = {
        "nanny process": lambda: bool(processes_matching(run.marker, "--argv")),
        "nanny work dir": lambda: any(run.tmp.glob("kernel-hub-nanny-*/kernel.json")),
        "kernel process": lambda: bool(processes_matching(run.marker, "orphan-kernel")),
    }.get(point)
    run.start([sys.executable, "-m", "kernel_hub", "launch", "spec/orphan", "--nanny", "--json"])
    if observed is None:  # running: the JSON line is printed once the kernel answered
        run.read_until(lambda line: line.startswith("{"))
        if point == "running, reaper gone too":
            # Only the nanny's lease is left to end it all, the connection file included.
            (reaper,) = processes_matching(run.marker, " -I -S -c ")
            os.kill(reaper, signal.SIGKILL)
        run.kill()
    else:
        observe(observed, run)
        run.kill()
    left, took = leftovers_after(run.local_leftovers, min(run.lease, REAPED))
    report("nanny", point, left, took)
    assert not left


#: Points of ``hub.launch(nanny=True)`` inside the local nanny's start: spawned (before its
#: handshake), started (handshake read), and its first answer.
HUB_NANNY_POINTS = ["starting", "progress:nanny", "progress:nanny started", "ready", "executed"]


@pytest.mark.parametrize("point", HUB_NANNY_POINTS)
def test_hub_launch_under_a_nanny(run, point):
    """Issue #22 item 5: killed between the nanny's start and its reaper registration.

    The nanny, its kernel, work dir (the key) and the runtime files stayed for the
    whole lease. Now the reaper ends them soon after the kill: the lease is made
    longer than the wait, so it cannot be what ends them.
    """
    run.lease = NO_LEASE
    run.start(host_argv("spec/orphan", point, nanny=True))
    kill_at(run, point, None)
    left, took = leftovers_after(run.local_leftovers, REAPED)
    report("hub nanny", point, left, took)
    assert not left


# ---- ssh: a real sshd, the remote side is this machine ----


@pytest.fixture(scope="module")
def ssh_env() -> Iterator[tuple[object, Path]]:
    """A real sshd on loopback and a "remote" venv with only ipykernel."""
    from kernel_hub_ssh_testing import SSHD, make_remote_python, start_sshd

    require_service("sshd", os.path.exists(SSHD), "apt-get install openssh-server")
    with tempfile.TemporaryDirectory(prefix="kh-faults-ssh-") as tmp:
        server = start_sshd(Path(tmp) / "sshd")
        try:
            python = make_remote_python(Path(tmp) / "remote-venv")
            yield server, python
        finally:
            server.stop()
            # Whatever a failed test left on the "remote" side must not outlive the suite.
            for pid, _ in processes_running(str(Path(tmp) / "remote-venv")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


SSH_POINTS = [
    "starting",
    "progress:connecting",
    "progress:starting nanny",
    "remote nanny process",
    "progress:forwarding",
    "progress:waiting for kernel",
    "ready",
    "executed",
]


@pytest.mark.ssh
@pytest.mark.parametrize("point", SSH_POINTS)
def test_ssh_kernel(run, ssh_env, point):
    server, python = ssh_env
    venv = str(python.parent.parent)
    before = set(Path("/tmp").glob("kernel-hub-nanny-*"))

    def remote_leftovers() -> list[str]:
        out = [f"remote process {pid}: {args[:120]}" for pid, args in processes_running(venv)]
        # Work dirs of this run's nannies (the remote side's /tmp; the remote env is not ours).
        out += [
            f"remote work dir {p}"
            for p in set(Path("/tmp").glob("kernel-hub-nanny-*")) - before
            if (p / "kernel.json").exists()
            and venv in (p / "kernel.log").read_text("utf-8", "replace")
        ]
        out += [f"ssh session {pid}" for pid in server.session_pids()]  # type: ignore[attr-defined]
        return out + run.local_leftovers()

    # A previous test that failed may have left a nanny on its lease.
    left, _ = leftovers_after(remote_leftovers, LEASE + 45.0)
    assert not left, f"a previous test left something: {left}"
    table = server.kernel_table(python=str(python), connect_timeout=60, lease=LEASE)  # type: ignore[attr-defined]
    observed = {"remote nanny process": lambda: bool(processes_running(venv))}.get(point)
    run.start(host_argv("ssh/box", point, {"ssh": {"box": table}}))
    kill_at(run, point, observed)
    left, took = leftovers_after(remote_leftovers, LEASE + 45.0)
    report("ssh", point, left, took)
    assert not left


# ---- docker: a real engine and the test image ----


@pytest.fixture(scope="module")
def docker_type() -> str:
    from kernel_hub_docker.engine import EngineUnavailable, get_client

    image = os.environ.get("KERNEL_HUB_DOCKER_TEST_IMAGE", "kernel-hub-test/ipykernel:bookworm")
    try:
        api = get_client().api
        api.inspect_image(image)
        ok = True
    except EngineUnavailable:
        ok = False
    except Exception:  # image missing
        ok = False
    require_service(
        "dockerd and the test image",
        ok,
        "start dockerd and build plugins/docker/scripts/build-test-image.sh (.ci/run does both)",
    )
    return "docker/bookworm-py"  # the name in the test image's org.kernel-hub.kernel label


DOCKER_POINTS = ["starting", "container created", "container running", "ready", "executed"]


@pytest.mark.docker
@pytest.mark.parametrize("point", DOCKER_POINTS)
def test_docker_kernel(run, docker_type, point):
    from kernel_hub_docker.engine import get_client
    from kernel_hub_docker.owner import LABEL_OWNER_PID

    api = get_client().api

    def containers(**filters: str) -> list[dict]:
        assert run.proc is not None
        labels = {"label": f"{LABEL_OWNER_PID}={run.proc.pid}"}
        return list(api.containers(all=True, filters={**labels, **filters}))

    def leftovers() -> list[str]:
        out = [f"container {c['Id'][:12]} ({c['State']})" for c in containers()]
        return out + run.local_leftovers()

    observed = {
        "container created": lambda: bool(containers()),
        "container running": lambda: bool(containers(status="running")),
    }.get(point)
    run.start(host_argv(docker_type, point))
    try:
        kill_at(run, point, observed)
        left, took = leftovers_after(leftovers, 60.0)
        report("docker", point, left, took)
        assert not left
    finally:
        for c in containers():  # what a failed test left must not outlive the suite
            api.remove_container(c["Id"], force=True)
