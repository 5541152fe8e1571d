"""Real-engine tests of the docker plugin: a real dockerd and the real test kernel image.

The session fixture ``docker_image`` (conftest.py) makes sure the engine answers
and the image exists; it fails in CI when they don't, and checks at the end
that no kernel container outlived the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import textwrap

import kernel_hub_docker.plugin as plugin
import pytest
import pytest_asyncio
from kernel_hub_docker import DockerManager, kernel_containers, prune
from kernel_hub_docker.engine import get_client
from kernel_hub_docker.owner import (
    LABEL_KERNEL_ID,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    LABEL_TYPE_ID,
    owner_labels,
)

from kernel_hub import KernelDied, KernelHub, LaunchError, RestartPolicy, RunningKernel
from kernel_hub.cli import main as cli_main
from kernel_hub.provider import CHANNELS
from kernel_hub.testing import EventRecorder, ForeignClient, execute_output, interrupt_busy_loop

pytestmark = [pytest.mark.docker, pytest.mark.integration]

LABEL_TYPE = "docker/bookworm-py"  # the name in the test image's org.kernel-hub.kernel label
DEAD_SOCKET = "unix:///nonexistent/kernel-hub-test/docker.sock"

# Tests that kill a kernel on purpose keep the restarter from relaunching it.
NO_RESTART = {"restart": False}


def config(image: str, **extra_types: dict) -> dict:
    return {
        "docker": {
            "ping_timeout": 2,
            "limited": {"image": image, "cpus": 0.5, "memory": "256m", "display_name": "Limited"},
            **extra_types,
        }
    }


@pytest_asyncio.fixture
async def hub(docker_image):
    async with KernelHub(
        config=config(docker_image), plugins=[plugin], load_entrypoints=False
    ) as hub:
        yield hub
    assert not hub.kernels


def inspect(container_id: str) -> dict:
    return get_client().api.inspect_container(container_id)


def container_gone(container_id: str) -> bool:
    from docker.errors import NotFound

    try:
        inspect(container_id)
    except NotFound:
        return True
    return False


async def shutdown_dead(kernel: RunningKernel) -> None:
    """Shut down a kernel that died on purpose; return once its container is removed."""
    await kernel.shutdown()
    # The restarter saw the death and removes the container itself, and shutdown() of a
    # kernel it already marked dead may return before that is done: wait for the end.
    await asyncio.wait_for(kernel.wait(), 60)


async def run(kernel: RunningKernel, code: str, timeout: float = 20) -> tuple[dict, str]:
    """Execute *code* on a client of its own; return the reply content and the stdout text."""
    async with kernel.client() as client:
        return await execute_output(client, code, timeout=timeout)


# ---- list ----


async def check_listing(hub: KernelHub, docker_image: str) -> dict:
    """Check the types this test made (a config table, the test image's label); return all.

    The engine may hold other labelled images, the user's (the docker README tells users
    to label theirs): they are listed too, and change nothing about ours.
    """
    types = {kt.id: kt for kt in await hub.find_kernel_types()}
    assert {"docker/limited", LABEL_TYPE} <= set(types)
    limited = types["docker/limited"]
    assert limited.display_name == "Limited"
    assert limited.metadata["docker"]["source"] == "config"
    assert limited.metadata["docker"]["cpus"] == 0.5
    labelled = types[LABEL_TYPE]
    assert labelled.display_name == "Python 3.11 (Debian bookworm, Docker)"
    assert labelled.argv == ("python3", "-m", "ipykernel_launcher", "-f", "{connection_file}")
    assert labelled.metadata["docker"] == {**labelled.metadata["docker"], "image": docker_image}
    assert labelled.metadata["docker"]["source"] == "label"
    # Whatever else is listed comes from another labelled image, never from our config.
    for tid in set(types) - {"docker/limited", LABEL_TYPE}:
        assert types[tid].metadata["docker"]["source"] == "label", types[tid]
        assert types[tid].metadata["docker"]["image"] != docker_image
    return types


@pytest.mark.asyncio
async def test_list_offers_config_and_labelled_image_types(hub, docker_image):
    await check_listing(hub, docker_image)


@pytest.mark.asyncio
async def test_list_with_a_users_labelled_image_present(hub, docker_image):
    """Issue 20: a kernel image the user labelled made the listing test fail."""
    from kernel_hub_docker.labelling import label_image, label_value

    suffix = os.urandom(4).hex()
    theirs = f"kh-test-users-own-{suffix}"
    ref = await asyncio.to_thread(
        label_image,
        docker_image,
        label_value(name=theirs, display_name="The user's own"),
        tag=f"kernel-hub-test/users-own:{suffix}",
    )
    try:
        types = await check_listing(hub, docker_image)
        assert types[f"docker/{theirs}"].display_name == "The user's own"
    finally:
        await asyncio.to_thread(get_client().api.remove_image, ref, force=True)


@pytest.mark.asyncio
async def test_list_with_the_engine_down_omits_docker_types_with_one_warning(
    docker_image, monkeypatch, caplog
):
    monkeypatch.setenv("DOCKER_HOST", DEAD_SOCKET)
    caplog.set_level(logging.WARNING)
    async with KernelHub(
        config=config(docker_image), plugins=[plugin], load_entrypoints=False
    ) as h:
        # "Must not hang": a generous bound, not a measurement.
        types = await asyncio.wait_for(h.find_kernel_types(), 30)
    assert types == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    assert "docker kernel types are left out" in text
    assert DEAD_SOCKET in text and "dockerd" in text and "DOCKER_HOST" in text


def test_cli_list_with_the_engine_down_succeeds_without_docker_types(docker_image):
    env = {**os.environ, "DOCKER_HOST": DEAD_SOCKET}
    out = subprocess.run(
        [sys.executable, "-m", "kernel_hub", "list", "--json"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ids = [t["id"] for t in json.loads(out.stdout)]  # other providers, if installed
    assert not [i for i in ids if i.startswith("docker/")]
    assert out.stderr.count("docker kernel types are left out") == 1


# ---- launch, execute, files, labels ----


@pytest.mark.asyncio
async def test_launch_execute_in_mounted_cwd_then_shutdown_removes_everything(hub, tmp_path):
    kernel = await hub.launch(
        LABEL_TYPE, cwd=str(tmp_path), env={"GREETING": "hi"}, params={"mount_cwd": True}
    )
    manager = kernel.manager
    cid = manager.container_id
    temp_dir = manager.temp_dir
    try:
        assert repr(manager) == f"<DockerManager {LABEL_TYPE} [RUNNING id={cid[:12]}]>"
        assert kernel.connection_info["ip"] == "127.0.0.1"
        data = inspect(cid)
        labels = data["Config"]["Labels"]
        assert labels[LABEL_KERNEL_ID] == kernel.id
        assert labels[LABEL_TYPE_ID] == LABEL_TYPE
        assert labels[LABEL_OWNER_PID] == str(os.getpid())
        assert labels[LABEL_OWNER_HOST] == owner_labels()[LABEL_OWNER_HOST]
        # Every published port is on loopback only, and the connection info points at them.
        bindings = [b for bs in data["NetworkSettings"]["Ports"].values() for b in bs or []]
        assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
        assert {int(b["HostPort"]) for b in bindings} == {
            kernel.connection_info[f"{c}_port"]
            for c in ("shell", "iopub", "stdin", "control", "hb")
        }
        assert data["HostConfig"]["Init"] is True
        # The connection file: private, in a private directory.
        (conn_file,) = [p for p in os.listdir(temp_dir) if p.endswith(".json")]
        assert stat.S_IMODE(os.stat(os.path.join(temp_dir, conn_file)).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(temp_dir).st_mode) & 0o777 == 0o700  # ipykernel adds +t

        reply, out = await run(
            kernel,
            "import os; open('made-in-container.txt', 'w').write('x'); "
            "print(os.getcwd(), os.environ['GREETING'])",
        )
        assert reply["status"] == "ok", reply
        assert out.split() == [str(tmp_path), "hi"]
        assert (tmp_path / "made-in-container.txt").read_text() == "x"
        assert await manager.is_alive()
    finally:
        await kernel.shutdown()
    assert container_gone(cid)
    assert not os.path.exists(temp_dir)
    assert not await manager.is_alive()
    assert repr(manager).endswith(f"[REMOVED id={cid[:12]}]>")


@pytest.mark.asyncio
async def test_resource_limits_are_in_the_inspect_data(hub):
    # The type says cpus=0.5, memory=256m; the launch params win over the type.
    kernel = await hub.launch("docker/limited", params={"memory": "300m"})
    try:
        host_config = inspect(kernel.manager.container_id)["HostConfig"]
        assert host_config["NanoCpus"] == 500_000_000
        assert host_config["Memory"] == 300 * 1024 * 1024
    finally:
        await kernel.shutdown()


# ---- interrupt, kill, death ----


@pytest.mark.parametrize("init", [True, False], ids=["docker-init", "kernel-as-pid1"])
@pytest.mark.asyncio
async def test_interrupt_a_busy_loop(hub, init):
    # With Docker's init (the default) tini forwards SIGINT to the kernel; without it the kernel
    # is PID 1, which gets only signals it has handlers for, and Python handles SIGINT.
    kernel = await hub.launch(LABEL_TYPE, params={"init": init})
    try:
        assert inspect(kernel.manager.container_id)["HostConfig"]["Init"] is init
        async with kernel.client() as client:
            code = 'print("go", flush=True)\nwhile True: pass'
            # "within 2 s", as a generous bound
            reply = await interrupt_busy_loop(client, code, timeout=60, interrupt_timeout=60)
            assert reply.content["status"] == "error"
            assert reply.content["ename"] == "KeyboardInterrupt"
            # ipykernel 6.17 (the image's) aborts an execute that arrives in the same loop turn
            # as its error reply; a kernel_info round trip lets that turn pass.
            await client.kernel_info(timeout=60)
            reply = await client.execute("1 + 1", timeout=60)
            assert reply.content["status"] == "ok"
    finally:
        await kernel.shutdown()


@pytest.mark.asyncio
async def test_cpu_seconds_come_from_the_containers_stats(hub):
    """What the hub's culler reads to keep a container that computes silently."""
    kernel = await hub.launch(LABEL_TYPE)
    try:
        async with kernel.client() as client:
            code = (
                "import threading\n"
                "def spin():\n"
                "    while True: pass\n"
                "threading.Thread(target=spin, daemon=True).start()"
            )
            reply = await client.execute(code, timeout=60)
            assert reply.content["status"] == "ok"
        first = await kernel.manager.cpu_seconds()
        assert first is not None and first > 0
        while (now := await kernel.manager.cpu_seconds()) is not None and now - first < 0.5:
            await asyncio.sleep(0.2)  # a counter polled, within the test's timeout
        assert now is not None
    finally:
        await kernel.shutdown()
    assert await kernel.manager.cpu_seconds() is None  # removed: nothing to measure


@pytest.mark.asyncio
async def test_kill_ends_the_container_and_shutdown_removes_it(hub):
    kernel = await hub.launch(LABEL_TYPE, **NO_RESTART)
    manager = kernel.manager
    try:
        await asyncio.wait_for(manager.kill(), 30)
        assert not await manager.is_alive()
        assert manager.exit_status == -9
        assert repr(manager).endswith(f"[DEAD exit=-9 id={manager.container_id[:12]}]>")
        # A manager rebuilt after the death (re-attach) learns the status from the engine.
        fresh = DockerManager.from_state(manager.describe(), type_id=LABEL_TYPE)
        # -9 from the engine, or None when the restarter has removed the container already.
        assert await asyncio.wait_for(fresh.wait(), 30) in (-9, None)
        assert not await fresh.is_alive()
    finally:
        await shutdown_dead(kernel)
    assert container_gone(manager.container_id)


@pytest.mark.asyncio
async def test_wait_is_woken_when_the_kernel_process_exits(hub):
    # Without the restarter's relaunch, so that the death stays visible.
    kernel = await hub.launch(LABEL_TYPE, **NO_RESTART)
    manager = kernel.manager
    try:
        waiter = asyncio.ensure_future(manager.wait())
        async with kernel.client() as client:
            with pytest.raises(KernelDied):
                await client.execute("import os; os._exit(7)", timeout=30)
        assert await asyncio.wait_for(waiter, 30) == 7
        assert not await manager.is_alive()
        assert manager.exit_status == 7
    finally:
        await shutdown_dead(kernel)
    assert container_gone(manager.container_id)


@pytest.mark.asyncio
async def test_auto_restart_after_the_container_is_killed(hub):
    restarted = asyncio.Event()
    hub.events.subscribe(lambda e: restarted.set() if e.kind == "restarted" else None)
    kernel = await hub.launch(
        LABEL_TYPE, restart=RestartPolicy(backoff_initial=0.1, backoff_max=0.5, jitter=0)
    )
    old = kernel.manager.container_id
    try:
        get_client().api.kill(old)  # from outside, as if the engine or an admin killed it
        await asyncio.wait_for(restarted.wait(), 90)
        assert kernel.manager.container_id != old
        assert container_gone(old)
        reply, out = await run(kernel, "print(6 * 7)")
        assert reply["status"] == "ok" and out.strip() == "42"
    finally:
        await kernel.shutdown()
    assert container_gone(kernel.manager.container_id)


ENDPOINT = ["transport", "ip", *(f"{c}_port" for c in CHANNELS), "key", "signature_scheme"]


def endpoint(info: dict) -> dict:
    return {k: info[k] for k in ENDPOINT}


KILL_KERNEL = (
    "import os\n"
    "for p in os.listdir('/proc'):\n"
    "    if p.isdigit() and int(p) not in (1, os.getpid()):\n"
    "        with open(f'/proc/{p}/cmdline', 'rb') as f:\n"
    "            if b'ipykernel' in f.read():\n"
    "                os.kill(int(p), 9)\n"
)


def kill_9_the_kernel_inside(container_id: str) -> None:
    """SIGKILL the kernel process inside its container (Docker's init, PID 1, then exits)."""
    api = get_client().api
    exec_id = api.exec_create(container_id, ["python3", "-c", KILL_KERNEL])["Id"]
    api.exec_start(exec_id)
    # The exec may be cut short as the container dies with its kernel: no exit-code check.


@pytest.mark.asyncio
async def test_a_relaunched_container_keeps_the_host_ports_and_key_and_every_client(hub):
    """Issue 21: after a kill -9 inside and a restart(now=True), the same host endpoint."""
    rec = EventRecorder(hub)
    kernel = await hub.launch(
        LABEL_TYPE, restart=RestartPolicy(backoff_initial=0.1, backoff_max=0.5, jitter=0)
    )
    before = endpoint(kernel.connection_info)
    containers = [kernel.manager.container_id]
    foreign = ForeignClient(kernel.connection_info)
    try:
        await foreign.start()
        assert await foreign.print_1() == ["1\n"]
        async with kernel.client() as client:
            assert (await client.execute("x = 1", timeout=60)).content["status"] == "ok"
            kill_9_the_kernel_inside(containers[0])
            await rec.wait_for("restarted", kernel.id, timeout=90)
            containers.append(kernel.manager.container_id)
            assert containers[1] != containers[0] and container_gone(containers[0])
            assert endpoint(kernel.connection_info) == before
            # Docker publishes the container's ports on exactly those host ports, and the key
            # is in the mounted connection file only: not in argv, env or labels.
            data = inspect(containers[1])
            assert before["key"] not in json.dumps(data)
            bound = data["NetworkSettings"]["Ports"]
            assert sorted(int(b[0]["HostPort"]) for b in bound.values()) == sorted(
                before[f"{c}_port"] for c in CHANNELS
            )
            # Both clients made before the death reach the new kernel. jupyter_client's
            # IOPub comes back through Docker's port proxy a moment after its shell (0.2-0.6 s
            # measured): as a client that (re)joins a kernel does, it waits for IOPub.
            await foreign.wait_for_iopub()
            assert await foreign.print_1() == ["1\n"]
            out = []
            reply = await client.execute("print(2)", output_hook=out.append, timeout=60)
            assert reply.content["status"] == "ok"
            assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == ["2\n"]

            await kernel.restart(now=True)
            containers.append(kernel.manager.container_id)
            assert container_gone(containers[1])
            assert endpoint(kernel.connection_info) == before
            await foreign.wait_for_iopub()
            assert await foreign.print_1() == ["1\n"]
            assert (await client.execute("1", timeout=60)).content["status"] == "ok"
        assert rec.of(kernel.id, "connection_changed") == []
    finally:
        await foreign.close()
        rec.close()
        await kernel.shutdown()
    assert all(container_gone(c) for c in containers)


@pytest.mark.asyncio
async def test_a_host_port_taken_before_the_relaunch_gives_new_ports_and_the_same_key(hub):
    import socket

    rec = EventRecorder(hub)
    kernel = await hub.launch(
        LABEL_TYPE, restart=RestartPolicy(backoff_initial=0.3, backoff_max=1, jitter=0)
    )
    before = dict(kernel.connection_info)
    thief = socket.socket()

    def steal(event) -> None:
        # 'restarting' comes after the old container is removed and before the relaunch:
        # another process's server takes the shell port meanwhile. That it can bind it at all
        # shows the removal released the published port (SO_REUSEADDR, as ZeroMQ: only the
        # closed connections of the old port are in TIME_WAIT).
        if event.kernel_id == kernel.id and event.kind == "restarting":
            thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            thief.bind(("127.0.0.1", before["shell_port"]))
            thief.listen(1)

    unsubscribe = hub.events.subscribe(steal)
    try:
        async with kernel.client() as client:
            assert (await client.execute("x = 1", timeout=60)).content["status"] == "ok"
            get_client().api.kill(kernel.manager.container_id)
            await rec.wait_for("restarted", kernel.id, timeout=90)
            after = kernel.connection_info
            assert thief.getsockname() == ("127.0.0.1", before["shell_port"])
            assert after["shell_port"] != before["shell_port"]
            assert (after["key"], after["signature_scheme"]) == (
                before["key"],
                before["signature_scheme"],
            )
            changed = rec.of(kernel.id, "connection_changed")
            assert [e.data["shell_port"] for e in changed] == [after["shell_port"]]
            assert "key" not in changed[0].data and changed[0].data["key_changed"] is False
            # kernel_hub's client followed to the new ports.
            assert (await client.execute("1", timeout=60)).content["status"] == "ok"
    finally:
        unsubscribe()
        thief.close()
        rec.close()
        await kernel.shutdown()


# ---- re-attach from another process ----

ATTACH_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    import kernel_hub_docker.plugin as plugin
    from kernel_hub import KernelHub

    async def main():
        saved = json.loads(sys.stdin.read())
        hub = KernelHub(config=json.loads(sys.argv[1]), plugins=[plugin], load_entrypoints=False)
        kernel = await hub.attach(saved["type_id"], saved["connection_info"], saved["state"],
                                  kernel_id=saved["kernel_id"])
        out = []
        async with kernel.client() as client:
            reply = await client.execute(
                "print(secret * 2)", timeout=60,
                output_hook=lambda m: out.append(m.content.get("text", "")))
        print(json.dumps({"status": reply.content["status"], "out": "".join(out),
                          "repr": repr(kernel.manager),
                          "alive": await kernel.manager.is_alive(),
                          "container": kernel.manager.describe()["container_id"]}))
        # No shutdown: the kernel belongs to the launching process.

    asyncio.run(main())
    """
)


@pytest.mark.asyncio
async def test_reattach_from_a_second_process(hub, docker_image):
    kernel = await hub.launch(LABEL_TYPE)
    try:
        reply, _ = await run(kernel, "secret = 21")
        assert reply["status"] == "ok"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ATTACH_SCRIPT, json.dumps(config(docker_image)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(
            proc.communicate(json.dumps(kernel.describe()).encode()), 90
        )
        assert proc.returncode == 0, stderr.decode()
        result = json.loads(stdout.decode().strip().splitlines()[-1])
        cid = kernel.manager.container_id
        assert result == {
            "status": "ok",
            "out": "42\n",
            "repr": f"<DockerManager {LABEL_TYPE} [RUNNING id={cid[:12]}]>",
            "alive": True,
            "container": cid,
        }
        assert await kernel.manager.is_alive()  # the second process left it running
    finally:
        await kernel.shutdown()


# ---- the reaper ----


@pytest.mark.asyncio
async def test_prune_removes_containers_of_dead_owners_only(docker_image, capsys):
    api = get_client().api
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mine = owner_labels()
    owners = {
        "dead": {**mine, LABEL_OWNER_PID: str(dead.pid)},
        "alive": mine,
        "elsewhere": {**mine, LABEL_OWNER_HOST: "some-other-host"},
    }
    ids = {}
    try:
        for name, labels in owners.items():
            created = api.create_container(
                docker_image,
                command=["sleep", "300"],
                labels={**labels, LABEL_KERNEL_ID: f"test-prune-{name}", LABEL_TYPE_ID: "x/y"},
                host_config=api.create_host_config(init=True),
            )
            ids[name] = created["Id"]
            api.start(created["Id"])

        # Only this test's containers are looked at: the engine may hold the user's orphans.
        would = await asyncio.to_thread(prune, dry_run=True)
        assert [c.id for c in would if c.id in ids.values()] == [ids["dead"]]
        assert not container_gone(ids["dead"])

        assert cli_main(["docker", "prune", "--json"]) == 0
        printed = [c for c in json.loads(capsys.readouterr().out) if c["id"] in ids.values()]
        assert [c["id"] for c in printed] == [ids["dead"]]
        assert printed[0]["owner_state"] == "dead"
        assert container_gone(ids["dead"])
        assert not container_gone(ids["alive"]) and not container_gone(ids["elsewhere"])
        listed = {c.id: c.owner_state for c in await asyncio.to_thread(kernel_containers)}
        assert listed[ids["alive"]] == "alive" and listed[ids["elsewhere"]] == "unknown"
    finally:
        for cid in ids.values():
            if not container_gone(cid):
                api.remove_container(cid, force=True)


@pytest.mark.asyncio
async def test_first_launch_of_a_process_reconciles_orphans(hub, docker_image, monkeypatch):
    import kernel_hub_docker.launch

    monkeypatch.setattr(kernel_hub_docker.launch, "_reconciled", False)  # a fresh host process
    api = get_client().api
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    labels = {**owner_labels(), LABEL_OWNER_PID: str(dead.pid), LABEL_KERNEL_ID: "test-orphan"}
    orphan = api.create_container(docker_image, command=["sleep", "300"], labels=labels)["Id"]
    try:
        kernel = await hub.launch(LABEL_TYPE)
        await kernel.shutdown()
        assert container_gone(orphan)
    finally:
        if not container_gone(orphan):
            api.remove_container(orphan, force=True)


# ---- clear failures ----


@pytest.mark.asyncio
async def test_failure_engine_not_running(hub, monkeypatch):
    await hub.get_kernel_type(LABEL_TYPE)  # known while the engine answered
    monkeypatch.setenv("DOCKER_HOST", DEAD_SOCKET)
    with pytest.raises(LaunchError) as err:
        await hub.launch(LABEL_TYPE)
    msg = str(err.value)
    assert DEAD_SOCKET in msg and "not reachable" in msg
    assert "dockerd" in msg and "DOCKER_HOST" in msg


@pytest.mark.asyncio
async def test_failure_image_missing_names_it_and_says_how_to_build_it(docker_image):
    missing = "kernel-hub-test/missing:nope"
    cfg = config(docker_image, gone={"image": missing})
    async with KernelHub(config=cfg, plugins=[plugin], load_entrypoints=False) as hub:
        with pytest.raises(LaunchError) as err:
            await hub.launch("docker/gone")
    msg = str(err.value)
    assert repr(missing) in msg
    assert f"docker pull {missing}" in msg and "pull = true" in msg
    # Issue #22 item 11: it pointed a user at the suite's own test-image script.
    assert "build-test-image.sh" not in msg and "\n" not in msg
    assert "'Making a kernel image'" in msg and "FROM image" in msg and "registry" in msg
    assert "kernel-hub docker label IMAGE --name NAME" in msg


@pytest.mark.asyncio
async def test_failure_pull_reports_progress_then_the_error(docker_image):
    # No registry is reachable here, so the pull itself fails; the progress event comes first.
    missing = "kernel-hub-test/missing:nope"
    cfg = config(docker_image, gone={"image": missing, "pull": True})
    events = []
    async with KernelHub(config=cfg, plugins=[plugin], load_entrypoints=False) as hub:
        hub.events.subscribe(events.append)
        with pytest.raises(LaunchError, match=f"pulling the Docker image '{missing}' failed"):
            await hub.launch("docker/gone")
    progress = [e for e in events if e.kind == "progress"]
    assert progress and progress[0].data == {
        "step": "pulling",
        "message": f"pulling image {missing}",
    }
    assert progress[0].type_id == "docker/gone"


@pytest.mark.asyncio
async def test_failure_container_exits_during_start_shows_its_last_log_lines(docker_image):
    crash = {
        "image": docker_image,
        "argv": ["python3", "-c", "import sys; print('kernel says no', file=sys.stderr); "
                 "sys.exit(3)"],
    }  # fmt: skip
    before = {c.id for c in await asyncio.to_thread(kernel_containers)}
    async with KernelHub(
        config=config(docker_image, crash=crash), plugins=[plugin], load_entrypoints=False
    ) as hub:
        with pytest.raises(LaunchError) as err:
            await hub.launch("docker/crash", ready_timeout=60)
    msg = str(err.value)
    assert "kernel says no" in msg
    assert "exited during start" in msg and "3" in msg
    assert {c.id for c in await asyncio.to_thread(kernel_containers)} == before


@pytest.mark.asyncio
async def test_failure_ports_not_published(docker_image):
    # A container on the 'none' network runs, but Docker cannot publish its ports.
    cfg = config(docker_image, nonet={"image": docker_image, "network": "none"})
    before = {c.id for c in await asyncio.to_thread(kernel_containers)}
    async with KernelHub(config=cfg, plugins=[plugin], load_entrypoints=False) as hub:
        with pytest.raises(LaunchError) as err:
            await hub.launch("docker/nonet")
    msg = str(err.value)
    assert "did not publish the kernel ports" in msg and "'none'" in msg
    assert "bridge" in msg
    assert {c.id for c in await asyncio.to_thread(kernel_containers)} == before


@pytest.mark.asyncio
async def test_an_ipykernel_6_image_runs_plain_under_auto_and_required_fails_at_once(hub):
    """Issue 24: Debian's ipykernel 6.17 has no CurveZMQ; its types declare none."""
    from kernel_hub.testing import Sniffer

    refused = f"curve-required-{os.getpid()}"
    with pytest.raises(LaunchError) as info:
        await hub.launch("docker/limited", kernel_id=refused, transport_encryption="required")
    message = str(info.value)
    assert "docker/limited does not declare CurveZMQ support" in message and "\n" not in message
    assert [c for c in await asyncio.to_thread(kernel_containers) if c.kernel_id == refused] == []
    kernel = await hub.launch("docker/limited", **NO_RESTART)  # auto: plain
    try:
        assert "curve_publickey" not in kernel.connection_info
        sniffer = Sniffer(kernel.connection_info)
        try:  # plain: anyone gets through (what Curve would stop)
            assert await asyncio.to_thread(sniffer.handshake, "shell") is True
        finally:
            sniffer.close()
        async with kernel.client() as client:
            content, text = await execute_output(client, "print(6*7)", timeout=60)
            assert content["status"] == "ok" and text.strip() == "42"
    finally:
        await kernel.shutdown()
