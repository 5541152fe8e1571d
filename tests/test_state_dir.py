"""Kernels that outlive their host, on purpose: ``KernelHub(state_dir=...)`` (issue 23).

A host process launches kernels into a state dir, runs ``x = 42`` on each and is
killed with SIGKILL; a new hub on the same state adopts every kernel that still
runs (``x`` is still there), cleans up one that died meanwhile, and after the
grace with no new host nothing is left. Every process a run starts carries
``KH_STATE_RUN=<token>`` in its environment, which is how leftovers are found.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kernel_hub import KernelHub, StateInUse
from kernel_hub.contract.events import KernelEvent
from kernel_hub.lifecycle.state import Owner, Record, StateDir
from kernel_hub.managers.procs import pid_alive, process_token
from kernel_hub.testing import processes_with_env, run_cli, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

#: The host: launch each TYPE[:nanny] into the state dir, x = 42 on each, print the
#: kernels' describe() as JSON, then wait to be killed.
HOST = textwrap.dedent(
    """
    import asyncio, json, sys
    from kernel_hub import KernelHub

    state_dir, grace, config = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
    specs = sys.argv[4:]

    async def main():
        hub = KernelHub(state_dir=state_dir, grace=grace, config=config)
        await hub.adopt()
        out = []
        for spec in specs:
            type_id, _, mode = spec.partition(":")
            kernel = await hub.launch(type_id, nanny=mode == "nanny", restart=False)
            async with kernel.client() as client:
                await client.execute("x = 42", timeout=120)
            out.append(kernel.describe())
        print(json.dumps(out), flush=True)
        sys.stdin.readline()  # until the test kills this process

    asyncio.run(main())
    """
)


#: A host with a kernel under a restart policy and a pool of one spare: prints
#: {"kernel": describe(), "spare": describe()}, then waits to be killed.
POOL_HOST = textwrap.dedent(
    """
    import asyncio, json, sys
    from kernel_hub import KernelHub

    state_dir, grace, config = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])

    async def main():
        hub = KernelHub(state_dir=state_dir, grace=grace, config=config)
        await hub.adopt()
        kernel = await hub.launch("ipykernel/python3", restart=True)
        async with kernel.client() as client:
            await client.execute("x = 42", timeout=120)
        pool = await hub.pool("ipykernel/python3", size=1)
        await pool.wait_full(120)
        (spare,) = pool.spares
        print(json.dumps({"kernel": kernel.describe(), "spare": spare.describe()}), flush=True)
        sys.stdin.readline()  # until the test kills this process

    asyncio.run(main())
    """
)


class Host:
    """One host run: a state dir, an environment marker, the process."""

    def __init__(self, root: Path, grace: float, config: dict[str, Any] | None = None) -> None:
        self.script = HOST
        self.config = config or {}
        self.root = root
        self.grace = grace
        self.token = uuid.uuid4().hex
        self.state_dir = root / "hubs" / "test"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kernels: list[dict[str, Any]] = []

    @property
    def marker(self) -> str:
        return f"KH_STATE_RUN={self.token}"

    def env(self) -> dict[str, str]:
        (self.root / "tmp").mkdir(exist_ok=True)
        return {
            **os.environ,
            "KH_STATE_RUN": self.token,
            "KERNEL_HUB_STATE_DIR": str(self.root / "hubs"),
            "TMPDIR": str(self.root / "tmp"),
        }

    def start(self, *specs: str) -> None:
        with open(self.root / "host.log", "wb") as log:
            self._start(specs, log)
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the host prints one line once all are ready
        assert line, "the host exited first:\n" + (self.root / "host.log").read_text()[-3000:]
        self.kernels = json.loads(line)

    def _start(self, specs: tuple[str, ...], log: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.script, str(self.state_dir), str(self.grace)]
            + [json.dumps(self.config), *specs],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=self.env(),
            start_new_session=True,
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def leftovers(self) -> list[int]:
        return processes_with_env(self.marker)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
        for pid in self.leftovers():  # only what this run started
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    made: list[Host] = []

    def make(grace: float = 120.0, config: dict[str, Any] | None = None) -> Host:
        h = Host(tmp_path, grace, config)
        made.append(h)
        monkeypatch.setenv("KERNEL_HUB_STATE_DIR", str(tmp_path / "hubs"))
        return h

    yield make
    for h in made:
        h.cleanup()


async def printed_x(kernel: Any) -> str:
    """Return what ``print(x)`` prints on *kernel*."""
    out: list[str] = []

    def hook(msg: Any) -> None:
        if msg.header["msg_type"] == "stream":
            out.append(msg.content.get("text", ""))

    async with kernel.client() as client:
        await client.execute("print(x)", timeout=60, output_hook=hook)
    return "".join(out).strip()


def test_kill_9_then_a_new_hub_adopts_local_and_nanny_kernels(host: Any) -> None:
    h = host(grace=120.0)
    h.start("ipykernel/python3", "ipykernel/python3:nanny", "ipykernel/python3")
    records = StateDir(h.state_dir).records()
    assert {r.kernel_id for r in records} == {k["kernel_id"] for k in h.kernels}
    for path in [h.state_dir, *(r.path for r in records)]:
        assert path is not None
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    h.kill()
    # One kernel dies while no host runs: its nanny is killed outright.
    dead = h.kernels[2]
    os.kill(dead["state"]["nanny_pid"], signal.SIGKILL)
    assert wait_gone([dead["state"]["nanny_pid"], dead["state"]["kernel_pid"]], 30) == []

    async def adopt() -> None:
        events: list[KernelEvent] = []
        hub = KernelHub(state_dir=h.state_dir, config={})
        hub.events.subscribe(events.append)
        async with hub:
            assert sorted(hub.kernels) == sorted(k["kernel_id"] for k in h.kernels[:2]), events
            kinds = {(e.kind, e.kernel_id) for e in events}
            for k in h.kernels[:2]:
                assert ("adopted", k["kernel_id"]) in kinds
            assert ("cleaned_up", dead["kernel_id"]) in kinds
            for kernel in hub.kernels.values():
                assert await printed_x(kernel) == "42"  # the previous variables are intact
            # Recorded again, under this process.
            owners = {r.owner.pid for r in StateDir(h.state_dir).records()}
            assert owners == {os.getpid()}
        assert StateDir(h.state_dir).records() == []

    asyncio.run(adopt())
    assert wait_gone(h.leftovers(), 30) == []


def test_after_the_grace_with_no_new_host_nothing_is_left(host: Any) -> None:
    h = host(grace=4.0)
    h.start("ipykernel/python3", "ipykernel/python3:nanny")
    pids = [k["state"]["kernel_pid"] for k in h.kernels]
    h.kill()
    # The lease (the grace) ends the kernels; the reaper's expire program the records.
    assert wait_gone(pids, 60) == []
    deadline = time.monotonic() + 60
    while StateDir(h.state_dir).records() and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the outcome of a detached process, bounded
    assert StateDir(h.state_dir).records() == []
    assert wait_gone(h.leftovers(), 60) == []
    assert not any(p.name.startswith("kernel-hub-nanny-") for p in (h.root / "tmp").iterdir())


def test_two_live_hubs_on_one_state(host: Any) -> None:
    h = host()

    async def main() -> None:
        async with KernelHub(state_dir=h.state_dir, config={}) as first:
            second = KernelHub(state_dir=h.state_dir, config={})
            with pytest.raises(StateInUse, match=r"in use by a live hub \(pid \d+\)"):
                await second.adopt()
            assert first.state is not None and first.state.locked
        # Released on close: the next hub gets it.
        async with KernelHub(state_dir=h.state_dir, config={}) as third:
            assert third.state is not None and third.state.locked

    asyncio.run(main())


def test_ps_and_stop_as_subprocesses(host: Any) -> None:
    h = host(grace=120.0)
    h.start("ipykernel/python3", "ipykernel/python3:nanny")
    env = h.env()
    ps = run_cli("ps", "--json", env=env)
    assert ps.returncode == 0, ps.stderr
    rows = json.loads(ps.stdout)
    assert {r["kernel_id"] for r in rows} == {k["kernel_id"] for k in h.kernels}
    assert all(r["owner_alive"] and r["status"] == "running" for r in rows)
    table = run_cli("ps", env=env)
    assert "CONNECTION FILE" in table.stdout and h.kernels[0]["kernel_id"] in table.stdout
    # A live hub's kernel is kept unless --force.
    kept = run_cli("stop", h.kernels[0]["kernel_id"][:12], env=env)
    assert kept.returncode == 1 and "its hub (pid" in kept.stderr and "--force" in kept.stderr
    h.kill()
    rows = json.loads(run_cli("ps", "--json", env=env).stdout)
    assert all(not r["owner_alive"] and r["status"] == "orphaned" for r in rows), rows
    one = run_cli("stop", h.kernels[0]["kernel_id"], env=env)
    assert one.returncode == 0 and f"stopped ipykernel/python3 {h.kernels[0]['kernel_id']}" in (
        one.stdout
    ), one.stderr
    rest = run_cli("stop", "--all", env=env)
    assert rest.returncode == 0 and h.kernels[1]["kernel_id"] in rest.stdout, rest.stderr
    assert json.loads(run_cli("ps", "--json", env=env).stdout) == []
    pids = [k["state"]["kernel_pid"] for k in h.kernels]
    assert wait_gone(pids, 30) == []
    unknown = run_cli("stop", "nope", env=env)
    assert unknown.returncode == 2 and "no recorded kernel 'nope'" in unknown.stderr


def test_without_state_dir_nothing_changes() -> None:
    async def main() -> None:
        async with KernelHub(config={}) as hub:
            assert hub.state is None
            kernel = await hub.launch("ipykernel/python3", restart=False)
            assert kernel.request.outlive == 0
            assert kernel.state.get("launch_mode") != "nanny"  # a plain local process

    asyncio.run(main())


def test_adoption_cleans_up_a_spare_and_restarts_by_the_recorded_policy(host: Any) -> None:
    h = host(grace=120.0)
    h.script = POOL_HOST
    h.start()
    kernel, spare = h.kernels["kernel"], h.kernels["spare"]  # type: ignore[call-overload]
    pooled = {r.kernel_id: r.pooled for r in StateDir(h.state_dir).records()}
    assert pooled == {kernel["kernel_id"]: False, spare["kernel_id"]: True}
    h.kill()

    async def adopt() -> None:
        events: list[KernelEvent] = []
        restarted = asyncio.Event()

        def on_event(event: KernelEvent) -> None:
            events.append(event)
            if event.kind == "restarted":
                restarted.set()

        hub = KernelHub(state_dir=h.state_dir, config={})
        hub.events.subscribe(on_event)
        async with hub:
            assert list(hub.kernels) == [kernel["kernel_id"]]
            cleaned = [e for e in events if e.kind == "cleaned_up"]
            assert [e.kernel_id for e in cleaned] == [spare["kernel_id"]]
            assert "a pool's spare" in cleaned[0].data["reason"]
            assert wait_gone([spare["state"]["kernel_pid"], spare["state"]["nanny_pid"]], 30) == []
            adopted = hub.get(kernel["kernel_id"])
            assert adopted.restart_policy.limit > 0  # the recorded policy, not "off"
            os.kill(kernel["state"]["kernel_pid"], signal.SIGKILL)
            await asyncio.wait_for(restarted.wait(), 120)
            assert adopted.status == "RUNNING"
            async with adopted.client() as client:
                reply = await client.execute("y = 1", timeout=60)
            assert reply.content["status"] == "ok"
            (record,) = StateDir(h.state_dir).records()  # recorded again: the new process
            assert record.kernel["state"]["kernel_pid"] != kernel["state"]["kernel_pid"]
        assert StateDir(h.state_dir).records() == []

    asyncio.run(adopt())
    assert wait_gone(h.leftovers(), 30) == []


def orphan_kernelspec(root: Path) -> str:
    """Install a kernelspec whose kernel does not watch its parent; return its type id.

    ipykernel ends itself when the process named by ``JPY_PARENT_PID`` (its
    nanny) goes; with the variable removed (``env -u``, which execs, so the pid
    stays) it lives on after its nanny, as kernels of other languages do.
    """
    spec = root / "jupyter" / "kernels" / "orphan-py"
    spec.mkdir(parents=True)
    argv = ["env", "-u", "JPY_PARENT_PID", sys.executable, "-m", "ipykernel_launcher"]
    kernel = {
        "argv": [*argv, "-f", "{connection_file}"],
        "display_name": "orphan",
        "language": "python",
    }
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return "spec/orphan-py"


def test_a_kernel_whose_nanny_was_killed_is_ended_on_adoption(
    host: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    type_id = orphan_kernelspec(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    h = host(grace=120.0)
    h.start(f"{type_id}:nanny")
    (kernel,) = h.kernels
    nanny, pid = kernel["state"]["nanny_pid"], kernel["state"]["kernel_pid"]
    (record,) = StateDir(h.state_dir).records()
    assert record.kernel_groups == {str(pid): process_token(pid)}
    h.kill()
    os.kill(nanny, signal.SIGKILL)  # while no host runs
    assert wait_gone([nanny], 30) == []
    assert pid_alive(pid), "the kernel ended with its nanny: the test needs one that does not"

    async def adopt() -> list[KernelEvent]:
        events: list[KernelEvent] = []
        hub = KernelHub(state_dir=h.state_dir, config={})
        hub.events.subscribe(events.append)
        async with hub:
            assert hub.kernels == {}
        return events

    events = asyncio.run(adopt())
    assert [(e.kind, e.kernel_id) for e in events] == [("cleaned_up", kernel["kernel_id"])]
    assert wait_gone([pid], 30) == [], "the kernel outlived the cleanup of its record"
    assert StateDir(h.state_dir).records() == []
    assert wait_gone(h.leftovers(), 30) == []


def test_end_orphans_kills_a_group_only_if_its_leader_is_the_recorded_process(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        pid = proc.pid
        record = Record(kernel={"kernel_id": "k"}, owner=Owner(1), created=0.0, grace=1.0)
        record.kernel_groups = {str(pid): "another-boot/12345"}  # pid reused since
        assert record.end_orphans() == []
        assert proc.poll() is None
        record.kernel_groups = {str(pid): process_token(pid)}
        assert record.end_orphans() == [pid]
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


# ---- Docker and SSH: a real engine, a real sshd ----


@pytest.fixture(scope="module")
def ssh_table(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from kernel_hub.testing import require_service

    require_service("sshd", os.path.exists("/usr/sbin/sshd"), "apt-get install openssh-server")
    from kernel_hub_ssh_testing import make_remote_python, start_sshd

    work = tmp_path_factory.mktemp("ssh")
    python = make_remote_python(work / "remote-venv")
    server = start_sshd(work / "sshd")
    try:
        yield server.kernel_table(python=str(python), connect_timeout=15), python
    finally:
        server.stop()


def docker_image() -> str:
    from kernel_hub.testing import require_service

    image = os.environ.get("KERNEL_HUB_DOCKER_TEST_IMAGE", "kernel-hub-test/ipykernel:bookworm")
    ok = subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode
    require_service(
        f"dockerd with the image {image}",
        ok == 0,
        "start dockerd and build plugins/docker/scripts/build-test-image.sh (.ci/run does)",
    )
    return image


def containers_of(kernel_ids: list[str]) -> list[str]:
    """Return the ids of the containers (any state) of these kernels."""
    found = []
    for kid in kernel_ids:
        out = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=org.kernel-hub.kernel-id={kid}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        found += out.split()
    return found


@pytest.mark.docker
@pytest.mark.ssh
@pytest.mark.slow
def test_kill_9_then_docker_and_ssh_kernels_are_adopted_or_cleaned_up(
    host: Any, ssh_table: Any
) -> None:
    table, remote_python = ssh_table
    config = {"docker": {"box": {"image": docker_image()}}, "ssh": {"box": table}}
    h = host(grace=120.0, config=config)
    try:
        h.start("docker/box", "docker/box", "ssh/box", "ssh/box")
        ids = [k["kernel_id"] for k in h.kernels]
        h.kill()
        # Both providers leave their kernels running for the grace.
        assert len(containers_of(ids)) == 2
        # One of each dies while no host runs: a container killed, a remote kernel killed.
        subprocess.run(["docker", "kill", h.kernels[1]["state"]["container_id"]], check=True)
        os.kill(h.kernels[3]["state"]["kernel_pid"], signal.SIGKILL)  # the "remote" is here

        async def adopt() -> None:
            events: list[KernelEvent] = []
            hub = KernelHub(state_dir=h.state_dir, config=config)
            hub.events.subscribe(events.append)
            async with hub:
                assert sorted(hub.kernels) == sorted([ids[0], ids[2]]), events
                cleaned = {e.kernel_id for e in events if e.kind == "cleaned_up"}
                assert cleaned == {ids[1], ids[3]}, events
                assert containers_of([ids[1]]) == []  # no container left of the dead one
                for kernel in hub.kernels.values():
                    assert await printed_x(kernel) == "42"
            assert StateDir(h.state_dir).records() == []

        asyncio.run(adopt())
        assert containers_of(ids) == []
        from kernel_hub.testing import processes_running

        remote = [p for p, _ in processes_running(str(remote_python.parent.parent))]
        assert wait_gone(remote, 30) == []  # no remote nanny, no remote kernel
    finally:
        for cid in containers_of([k["kernel_id"] for k in h.kernels]):
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def test_records_are_written_whole_and_partial_files_never_read(tmp_path: Path) -> None:
    from kernel_hub.lifecycle.state import Owner, Record

    state = StateDir(tmp_path / "state")
    record = Record(
        kernel={"kernel_id": "k1", "type_id": "spec/x", "connection_info": {}, "state": {}},
        owner=Owner.me(),
        created=1.0,
        grace=5.0,
    )
    path = state.write(record)
    assert path.stat().st_mode & 0o777 == 0o600
    assert state.path.stat().st_mode & 0o777 == 0o700
    # A writer killed mid-write leaves a temp file; a stray file may be anything.
    (state.path / ".k2.json.abcd.tmp").write_text('{"version": 1, "kern')
    (state.path / "k3.json").write_text("{not json")
    assert [r.kernel_id for r in state.records()] == ["k1"]
    assert [r.owner for r in state.records()] == [Owner.me()]
    state.remove("k1")
    assert state.records() == []
    with pytest.raises(ValueError, match="grace must be a positive number"):
        KernelHub(state_dir=tmp_path / "s", grace=0, config={})
