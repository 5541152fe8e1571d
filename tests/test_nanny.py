"""The nanny and NannyManager, with real processes.

The nanny runs as a remote provider runs it: ``python - < nanny.py``, by default
in a fresh venv that has nothing but ipykernel (no kernel_hub, no jupyter_client
of ours). Every nanny a test starts is stopped in teardown, failed test or not,
and its pids are checked to be gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from kernel_hub import AsyncKernelClient, KernelType
from kernel_hub.contract.errors import KernelHubError, LaunchError
from kernel_hub.managers.remote import NannyManager
from kernel_hub.nanny import Signer, source
from kernel_hub.plugins import HookRelay
from kernel_hub.testing import (
    NannyProcess,
    execute_output,
    pid_alive,
    start_nanny,
    wait_pid_gone,
)
from kernel_hub.wire.session import Session

TIMEOUT = 30


# ---- fixtures ----


@contextlib.contextmanager
def ipykernel_venv(base_python: str) -> Iterator[str]:
    """Yield the python of a fresh venv of *base_python* with only ipykernel installed."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to build the ipykernel-only venv: python3 -m pip install uv")
    with tempfile.TemporaryDirectory(prefix="kh-ipykernel-only-") as tmp:
        venv = os.path.join(tmp, "venv")
        subprocess.run([uv, "venv", "-q", "--python", base_python, venv], check=True)
        python = os.path.join(venv, "bin", "python")
        install = [uv, "pip", "install", "-q", "--python", python, "ipykernel"]
        env = {**os.environ, "VIRTUAL_ENV": venv}
        # From the uv cache when it has ipykernel (uv sync put it there), else from the index.
        if subprocess.run([*install, "--offline"], env=env, capture_output=True).returncode:
            subprocess.run(install, check=True, env=env)
        yield python


@pytest.fixture(scope="session")
def ipykernel_only_python() -> Iterator[str]:
    """The python of a fresh venv with only ipykernel (and its dependencies) installed."""
    with ipykernel_venv(sys.executable) as python:
        yield python


def find_python38() -> str | None:
    """Return a Python 3.8 interpreter if this machine has one (PATH or pyenv), else None."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = sorted(glob.glob(os.path.join(root, "versions", "3.8.*", "bin", "python3.8")))
    candidates += [p for p in [shutil.which("python3.8")] if p]
    for python in candidates:
        # (a pyenv shim exists even when that version is not enabled: it must really run)
        check = [python, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"]
        if subprocess.run(check, capture_output=True).returncode == 0:
            return python
    return None


@pytest.fixture
def nannies() -> Iterator[list[NannyProcess]]:
    """A list to put started nannies in; each is stopped, and checked gone, after the test."""
    started: list[NannyProcess] = []
    yield started
    for nanny in started:
        nanny.stop()
    for nanny in started:
        assert not pid_alive(nanny.nanny_pid), f"{nanny!r} outlived its test"
        for pid in nanny.kernel_pids:
            assert wait_pid_gone(pid, TIMEOUT), f"kernel {pid} of {nanny!r} outlived its test"
        assert not os.path.exists(nanny.workdir)


@pytest.fixture
def nanny_log(tmp_path):
    """A file for the nanny's stderr (its log)."""
    with open(tmp_path / "nanny.log", "wb") as f:
        yield f


@pytest.fixture
def nanny(ipykernel_only_python, nannies, nanny_log) -> NannyProcess:
    """A nanny + kernel running in the ipykernel-only venv."""
    started = start_nanny(python=ipykernel_only_python, stderr=nanny_log)
    nannies.append(started)
    return started


@pytest_asyncio.fixture
async def manager(nanny):
    mgr = NannyManager(nanny.connection_info, {"nanny_pid": nanny.nanny_pid})
    yield mgr
    mgr.close()


# ---- the shipped file ----


STDLIB = set(sys.stdlib_module_names)


#: Run in a fresh interpreter: CPython 3.11's AST validation keeps its recursion depth in
#: per-interpreter state, and another thread of the test process using ``ast`` meanwhile can
#: make ``ast.parse`` fail with "AST constructor recursion depth mismatch".
_CHECK_SOURCE = """
import ast, json, sys
tree = ast.parse(sys.stdin.read(), feature_version=(3, 8))
imported, problems = set(), []
for node in ast.walk(tree):
    if isinstance(node, ast.Import):
        imported.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            problems.append("relative imports cannot be shipped")
        imported.add((node.module or "").split(".")[0])
    elif isinstance(node, ast.Match):
        problems.append("match statements need Python 3.10")
    elif isinstance(node, ast.keyword) and node.arg == "strict":
        problems.append("zip(strict=) needs Python 3.10")
    elif isinstance(node, ast.Attribute) and node.attr == "UTC":
        problems.append("datetime.UTC needs Python 3.11")
print(json.dumps({"imported": sorted(imported), "problems": problems}))
"""


def test_source_is_one_self_contained_python38_file():
    text = source()
    out = subprocess.run(
        [sys.executable, "-c", _CHECK_SOURCE],
        input=text,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    found = json.loads(out.stdout)
    assert found["problems"] == []
    assert set(found["imported"]) - STDLIB - {"__future__"} == {"zmq"}
    # side-effect free at import, runnable as python - < nanny.py
    assert 'if __name__ == "__main__":' in text


def _with(
    payload_: bytes,
    *,
    magic: bytes | None = None,
    code: bytes | None = None,
    text: bytes | None = None,
) -> bytes:
    """*payload_* with one of its header's magic, code or source replaced."""
    import base64
    import zlib

    head, rest = payload_.split(b"\n", 1)
    tag, old_magic, code_len, _ = head.split(b" ")
    packed, plain = rest[: int(code_len)], rest[int(code_len) :]
    if code is not None:
        packed = base64.b64encode(zlib.compress(code))
    if text is not None:
        plain = base64.b64encode(zlib.compress(text))
    header = b" ".join([tag, magic or old_magic, b"%d" % len(packed), b"%d" % len(plain)])
    return header + b"\n" + packed + plain


@pytest.mark.parametrize("python", ["this", "3.8"])
def test_the_bootstrap_runs_this_pythons_code_and_compiles_the_source_elsewhere(python):
    """``python -c BOOTSTRAP`` takes the host's compiled nanny where the bytecode is this
    Python's (the source is then never compiled: it may be anything) and the source
    elsewhere (the code is then never loaded); Python 3.8 compiles it."""
    from kernel_hub.nanny import BOOTSTRAP, payload

    exe = sys.executable if python == "this" else find_python38()
    if exe is None:
        pytest.skip("no Python 3.8 on this machine")
    if python == "this":
        # Same bytecode: the source is not even looked at.
        data = _with(payload(), text=b"raise SystemExit('the source was compiled')")
    else:
        data = _with(payload(), code=b"not marshal data")  # another Python: only the source
    out = subprocess.run(
        [exe, "-c", BOOTSTRAP, "--help"], input=data, capture_output=True, timeout=TIMEOUT
    )
    assert out.returncode == 0, out.stderr
    assert b"--registration" in out.stdout  # the nanny's own usage
    # A header from another Python makes this one compile the source.
    foreign = _with(payload(), magic=b"deadbeef", code=b"not marshal data")
    out = subprocess.run(
        [sys.executable, "-c", BOOTSTRAP, "--help"],
        input=foreign,
        capture_output=True,
        timeout=TIMEOUT,
    )
    assert out.returncode == 0 and b"--registration" in out.stdout, out.stderr


def test_the_nanny_reads_ipykernels_version_from_its_dist_info_without_importlib_metadata(
    tmp_path,
):
    """``--curve auto`` judges the kernel before it starts: the version comes from the
    ``.dist-info`` beside the package (here a made-up 9.1.0 that shadows the real one),
    without importing ``importlib.metadata`` (~25 ms, before the kernel could start)."""
    (tmp_path / "ipykernel").mkdir()
    (tmp_path / "ipykernel" / "__init__.py").write_text("")
    (tmp_path / "ipykernel-9.1.0.dist-info").mkdir()
    script = (
        "import importlib.util, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"spec = importlib.util.spec_from_file_location('n', {source.__code__.co_filename!r})\n"
        "n = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(n)\n"
        "print(n._ipykernel_version(n._ipykernel_site()), 'importlib.metadata' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, timeout=TIMEOUT)
    assert out.stdout.split() == [b"9.1.0", b"False"], out.stderr


def test_signer_and_session_agree():
    key = "k" * 64
    session = Session(key)
    signer = Signer(key.encode())
    frames = session.serialize(session.msg("nanny_request", {"op": "ping"}))
    sig, parts = frames[1], frames[2:6]
    assert signer.check(sig, parts) is None
    assert signer.check(sig, parts) == "replayed signature"
    assert signer.check(b"", parts) == "unsigned message"
    assert Signer(b"other").check(sig, parts) == "invalid signature"


# ---- make_manager default ----


def test_hook_make_manager_core_default_builds_a_nanny_manager(plugin_manager):
    from kernel_hub import KernelHub

    hub = KernelHub(plugin_manager=plugin_manager, config={})
    kt = KernelType(provider="far", name="away")
    info = {"ip": "127.0.0.1", "key": "x", "nanny_control_port": 1, "nanny_events_port": 2}
    state = {"nanny_pid": 10, "kernel_pid": 11, "extra": "kept"}
    mgr = asyncio.run(
        HookRelay(plugin_manager).make_manager(
            plugin="far", hub=hub, kernel_type=kt, connection_info=info, state=state
        )
    )
    assert isinstance(mgr, NannyManager)
    assert mgr.describe() == {"nanny": True, "nanny_pid": 10, "kernel_pid": 11, "extra": "kept"}
    assert repr(mgr) == "<NannyManager far/away [RUNNING pid=11 nanny=127.0.0.1:1]>"
    with pytest.raises(LaunchError, match="plugin 'far' cannot rebuild a manager"):
        asyncio.run(
            HookRelay(plugin_manager).make_manager(
                plugin="far", hub=hub, kernel_type=kt, connection_info={"key": "x"}, state={}
            )
        )


def test_free_ports_skip_the_ports_to_avoid(monkeypatch):
    # A relaunch reuses the old kernel's five ports (free, not bound yet): the two the
    # nanny takes for itself must not be among them.
    from kernel_hub import nanny as nanny_module

    def first_picks():  # the same "random" choices each time
        picks = iter(range(10_000))
        monkeypatch.setattr(nanny_module._sysrandom, "randrange", lambda n: next(picks))

    first_picks()
    kernel_ports = nanny_module._free_ports("127.0.0.1", 5)
    first_picks()
    own = nanny_module._free_ports("127.0.0.1", 2, avoid=tuple(kernel_ports))
    assert len(set(own)) == 2 and set(own).isdisjoint(kernel_ports)


# ---- a real nanny in an ipykernel-only venv ----


@pytest.mark.integration
def test_ipykernel_only_venv_has_no_kernel_hub(ipykernel_only_python):
    res = subprocess.run([ipykernel_only_python, "-c", "import kernel_hub"], capture_output=True)
    assert res.returncode != 0 and b"ModuleNotFoundError" in res.stderr


@pytest.mark.integration
def test_handshake_workdir_and_key_stay_private(nanny):
    info = nanny.connection_info
    assert info["ip"] == "127.0.0.1" and info["signature_scheme"] == "hmac-sha256"
    ports = [info[k] for k in info if k.endswith("_port")]
    assert len(ports) == 7 == len(set(ports))
    assert len(info["key"]) == 64
    assert stat.S_IMODE(os.stat(nanny.workdir).st_mode) == 0o700
    conn_file = os.path.join(nanny.workdir, "kernel.json")
    assert stat.S_IMODE(os.stat(conn_file).st_mode) == 0o600
    for pid in (nanny.nanny_pid, nanny.kernel_pid):
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert info["key"].encode() not in f.read()
    # the kernel is in its own process group, and its parent is the nanny
    assert os.getpgid(nanny.kernel_pid) == nanny.kernel_pid
    with open(f"/proc/{nanny.kernel_pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == nanny.nanny_pid


@pytest.mark.integration
@pytest.mark.asyncio
async def test_the_hub_builds_the_nanny_manager_and_kill_wakes_wait(nanny):
    from kernel_hub import KernelHub

    assert AsyncKernelClient(nanny.connection_info).manager is None  # clients build none
    # Bare connection info with nanny ports: the hub's one place makes a NannyManager.
    hub = KernelHub(load_entrypoints=False, config={})
    manager = await hub.manager_for(nanny.connection_info, {})
    assert isinstance(manager, NannyManager)
    client = AsyncKernelClient(nanny.connection_info, manager=manager)
    async with client:
        content, out = await execute_output(
            client, "import os; print(os.getppid())", timeout=TIMEOUT
        )
        assert content["status"] == "ok"
        assert out.strip() == str(nanny.nanny_pid)
        mgr = client.manager
        assert await mgr.is_alive()
        waiter = asyncio.ensure_future(mgr.wait())
        await mgr.kill()
        assert await asyncio.wait_for(waiter, TIMEOUT) == -9
        assert mgr.exit_status == -9 and not await mgr.is_alive()
        assert not pid_alive(nanny.kernel_pid)
    manager.close()


BUSY = "import time\nprint('go', flush=True)\nwhile True: time.sleep(0.01)"


async def _busy(client, code=BUSY):
    """Start *code*; return the execute task once its loop runs (it printed "go")."""
    started = asyncio.get_running_loop().create_future()

    def hook(msg):
        if "go" in msg.content.get("text", "") and not started.done():
            started.set_result(None)

    task = asyncio.ensure_future(client.execute(code, output_hook=hook, timeout=TIMEOUT))
    await asyncio.wait_for(started, TIMEOUT)
    return task


@pytest.mark.integration
@pytest.mark.asyncio
async def test_interrupt_a_busy_loop_through_the_nanny(nanny, manager):
    async with AsyncKernelClient(nanny.connection_info, manager=manager) as client:
        task = await _busy(client)
        await client.interrupt()  # interrupt_mode "signal": the NannyManager's interrupt op
        reply = await asyncio.wait_for(task, TIMEOUT)
        assert reply.content["status"] == "error"
        assert reply.content["ename"] == "KeyboardInterrupt"
        reply = await client.execute("1+1", timeout=TIMEOUT)
        assert reply.content["status"] == "ok"
        assert await client.manager.is_alive()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kill_9_of_the_kernel_publishes_kernel_died_with_its_status(nanny, manager):
    import zmq

    session = Session(nanny.connection_info["key"])
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{nanny.connection_info['nanny_events_port']}")
    try:
        waiter = asyncio.ensure_future(manager.wait())

        async def recv(skip=()):
            while True:
                while not sub.poll(0):
                    await asyncio.sleep(0.01)  # a raw test socket; the manager never polls
                msg = session.deserialize(sub.recv_multipart())
                if msg.header["msg_type"] not in skip:
                    return msg

        welcome = await asyncio.wait_for(recv(), TIMEOUT)
        assert welcome.header["msg_type"] == "nanny_welcome"
        assert welcome.content["alive"] is True
        assert welcome.content["kernel_pid"] == nanny.kernel_pid
        os.kill(nanny.kernel_pid, 9)
        # (the manager's own subscription makes the nanny welcome everybody once more)
        died = await asyncio.wait_for(recv(skip=("nanny_welcome",)), TIMEOUT)
        assert died.header["msg_type"] == "kernel_died"
        assert died.content == {"exit_status": -9, "kernel_pid": nanny.kernel_pid}
        assert await asyncio.wait_for(waiter, TIMEOUT) == -9
        assert not await manager.is_alive() and manager.exit_status == -9
        assert "DEAD exit=-9" in repr(manager)
    finally:
        sub.close()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_forged_request_is_dropped_logged_counted_and_harmless(nanny, manager, nanny_log):
    import zmq

    good = Session(nanny.connection_info["key"])
    forger = Session("not-the-key-" * 4)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(f"tcp://127.0.0.1:{nanny.connection_info['nanny_control_port']}")
    try:
        forged = forger.msg("nanny_request", {"op": "kill"})
        unsigned = good.serialize(good.msg("nanny_request", {"op": "kill"}))
        unsigned[1] = b""
        replayed = good.serialize(good.msg("nanny_request", {"op": "ping"}))
        dealer.send_multipart(forger.serialize(forged))
        dealer.send_multipart(unsigned)
        dealer.send_multipart(replayed)
        dealer.send_multipart(replayed)  # the same signature again: a replay
        ping = good.msg("nanny_request", {"op": "ping"})
        dealer.send_multipart(good.serialize(ping))
        # Requests on one connection are handled in order, so the replies that come back
        # before the last ping's show which requests got one.
        replies = []
        while not replies or replies[-1].parent_header["msg_id"] != ping.header["msg_id"]:
            while not dealer.poll(0):
                await asyncio.sleep(0.01)  # a raw test socket; the manager itself never polls
            replies.append(good.deserialize(dealer.recv_multipart()))
        assert [r.parent_header["msg_type"] for r in replies] == ["nanny_request"] * 2
        assert replies[0].parent_header["msg_id"] == good.deserialize(replayed).header["msg_id"]
        assert replies[-1].content["bad_signatures"] == 3
    finally:
        dealer.close()
    assert await manager.is_alive()
    assert (await manager.ping())["bad_signatures"] == 3
    async with AsyncKernelClient(nanny.connection_info, manager=manager) as client:
        reply = await client.execute("6*7", timeout=TIMEOUT)
        assert reply.content["status"] == "ok"
    nanny.stop()  # the first drop is logged at once, the rest in a summary (at the latest on exit)
    with open(nanny_log.name) as f:
        log = f.read()
    assert "invalid signature" in log and "unsigned message" in log
    assert "replayed signature" in log
    assert nanny.connection_info["key"] not in log


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_signed_request_nested_5000_deep_is_refused_and_the_nanny_serves_on(nanny, manager):
    """Issue #22 item 10: json.loads raised RecursionError; the nanny and its kernel died."""
    import zmq

    good = Session(nanny.connection_info["key"])
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(f"tcp://127.0.0.1:{nanny.connection_info['nanny_control_port']}")
    try:
        deep = good.serialize(good.msg("nanny_request", {"op": "ping"}))
        deep[-1] = b'{"op": "ping", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        deep[1] = good.sign(deep[2:6])  # signed with the right key: only the depth is wrong
        ping = good.msg("nanny_request", {"op": "ping"})
        dealer.send_multipart(deep)
        dealer.send_multipart(good.serialize(ping))
        replies = []
        while not replies or replies[-1].parent_header.get("msg_id") != ping.header["msg_id"]:
            assert dealer.poll(TIMEOUT * 1000), "the nanny stopped answering"
            replies.append(good.deserialize(dealer.recv_multipart()))
        refused, answered = replies
        assert refused.content["status"] == "error"
        assert answered.content["status"] == "ok"
        assert answered.content["nanny_pid"] == nanny.nanny_pid
    finally:
        dealer.close()
    assert pid_alive(nanny.nanny_pid)
    assert await manager.is_alive()
    async with AsyncKernelClient(nanny.connection_info, manager=manager) as client:
        reply = await client.execute("6*7", timeout=TIMEOUT)
        assert reply.content["status"] == "ok"


@pytest.mark.integration
@pytest.mark.asyncio
async def test_sigterm_to_the_nanny_takes_the_kernel_with_it(nanny, manager):
    waiter = asyncio.ensure_future(manager.wait())
    assert await manager.is_alive()  # the waiter's subscription is live by the time ...
    os.kill(nanny.nanny_pid, 15)
    assert await asyncio.wait_for(waiter, TIMEOUT) == -9
    assert nanny.proc.wait(TIMEOUT) == 0
    assert wait_pid_gone(nanny.kernel_pid, TIMEOUT)
    assert not os.path.exists(nanny.workdir)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_nanny_killed_outright_wait_returns_and_kernel_follows(nanny, manager):
    manager.request_timeout = 2.0
    waiter = asyncio.ensure_future(manager.wait())
    assert await manager.is_alive()
    os.kill(nanny.nanny_pid, 9)
    nanny.proc.wait(TIMEOUT)
    assert await asyncio.wait_for(waiter, TIMEOUT) is None
    # ipykernel's parent poller ends the orphaned kernel
    assert wait_pid_gone(nanny.kernel_pid, TIMEOUT)


@pytest.mark.integration
def test_the_next_nanny_removes_the_work_dir_of_one_killed_outright(
    ipykernel_only_python, nannies, tmp_path
):
    # A private temp dir: nannies of other processes on this machine sweep /tmp too.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    first = start_nanny(python=ipykernel_only_python, env=env)
    nannies.append(first)
    os.kill(first.nanny_pid, 9)  # SIGKILL: nothing of the nanny runs any more
    first.proc.wait(TIMEOUT)
    assert wait_pid_gone(first.kernel_pid, TIMEOUT)  # ipykernel's parent poller ends it
    assert os.path.exists(os.path.join(first.workdir, "nanny.pid"))  # left behind, key and all
    second = start_nanny(python=ipykernel_only_python, env=env)
    nannies.append(second)
    assert not os.path.exists(first.workdir)
    assert os.path.exists(os.path.join(second.workdir, "kernel.json"))


@pytest.mark.integration
@pytest.mark.asyncio
async def test_restart_keeps_ports_and_key_and_wait_keeps_waiting(nanny, manager):
    waiter = asyncio.ensure_future(manager.wait())
    old = nanny.kernel_pid
    new = await manager.restart()
    nanny.kernel_pids.append(new)
    assert new != old and manager.kernel_pid == new
    assert wait_pid_gone(old, TIMEOUT)
    async with AsyncKernelClient(nanny.connection_info, manager=manager) as client:
        reply = await client.execute("import os; os.getpid()", timeout=TIMEOUT)
        assert reply.content["status"] == "ok"
    assert not waiter.done()
    await manager.kill()
    assert await asyncio.wait_for(waiter, TIMEOUT) == -9


@pytest.mark.integration
@pytest.mark.asyncio
async def test_cleanup_shuts_the_nanny_down_and_is_idempotent(nanny, manager):
    await manager.cleanup()
    assert nanny.proc.wait(TIMEOUT) == 0
    assert wait_pid_gone(nanny.kernel_pid, TIMEOUT)
    assert not os.path.exists(nanny.workdir)
    await manager.cleanup()
    assert "CLOSED" in repr(manager)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_second_manager_hears_the_nanny_exit_and_asks_nothing_more(nanny, manager):
    # Two managers of one kernel (a host that re-attached, say); the first shuts it down.
    other = NannyManager(nanny.connection_info, request_timeout=30)
    welcomed = asyncio.Event()
    on_event = other.handle_event

    def spy(kind, content):
        on_event(kind, content)
        if kind == "nanny_welcome":
            welcomed.set()

    other.handle_event = spy  # type: ignore[method-assign]
    try:
        watching = asyncio.ensure_future(other.wait())
        await asyncio.wait_for(welcomed.wait(), TIMEOUT)  # its subscription is live
        await manager.cleanup()
        await asyncio.wait_for(watching, TIMEOUT)  # woken by nanny_exiting
        # Nothing is left to ask: answers come at once, not after a 30 s (or 5 s) timeout.
        assert await asyncio.wait_for(other.is_alive(), 2) is False
        await asyncio.wait_for(other.cleanup(), 2)
        assert "CLOSED" in repr(other)
    finally:
        other.close()
    assert nanny.proc.wait(TIMEOUT) == 0


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_request_cancelled_as_its_reply_arrives_is_cancelled(nanny, manager):
    # Python 3.11's asyncio.wait_for returned the result when the reply and the cancel met in
    # one loop turn, and swallowed the cancel: SSHKernelManager.wait() then looped on after
    # an is_alive, and a client's close() hung on its watcher (seen in CI, ~1 run in 15).
    assert await manager.is_alive()  # the link exists
    link = manager._link()
    asking: asyncio.Task[bool] | None = None

    class ReplyThenCancel:
        """The reply's future, which cancels its caller the moment the reply is set."""

        def __init__(self, fut: asyncio.Future) -> None:
            self.fut = fut

        def done(self) -> bool:
            return self.fut.done()

        def set_result(self, msg) -> None:
            self.fut.set_result(msg)
            assert asking is not None
            asking.cancel()  # before the caller has run again

    class Pending(dict):
        def pop(self, key, *default):
            fut = super().pop(key, *default)
            return ReplyThenCancel(fut) if fut is not None else fut

    link.pending = Pending(link.pending)
    asking = asyncio.ensure_future(manager.is_alive())
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asking, TIMEOUT)
    assert asking.cancelled()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_killed_and_cleaned_up_kernel_is_dead_not_an_error(nanny, manager):
    # What the conformance suite does through a hub whose watcher cleans up a dead kernel
    # meanwhile: is_alive during the cleanup, then kill again after it.
    await asyncio.wait_for(manager.kill(), TIMEOUT)
    await asyncio.wait_for(manager.wait(), TIMEOUT)
    alive, _ = await asyncio.gather(manager.is_alive(), manager.cleanup())
    assert alive is False
    assert "CLOSED" in repr(manager)
    await asyncio.wait_for(manager.kill(), TIMEOUT)  # dead and cleaned up: a no-op
    assert not await manager.is_alive()
    assert nanny.proc.wait(TIMEOUT) == 0
    with pytest.raises(KernelHubError, match="is closed"):
        await manager.interrupt()  # only the no-op questions are answered once closed


REATTACH = """
import asyncio, json, sys
from kernel_hub import KernelHub, KernelType

async def main():
    saved = json.loads(sys.stdin.read())
    async with KernelHub(config={}) as hub:
        # No type: the hub's one place that builds managers makes a NannyManager.
        mgr = await hub.manager_for(saved["connection_info"], saved["state"])
        from kernel_hub import AsyncKernelClient
        async with AsyncKernelClient(saved["connection_info"], manager=mgr) as client:
            out = []
            await client.execute("print(x)", output_hook=lambda m: out.append(
                m.content.get("text", "")), timeout=30)
        print(json.dumps({"manager": type(mgr).__name__, "alive": await mgr.is_alive(),
                          "out": "".join(out), "describe": mgr.describe()}))
        mgr.close()  # detach: the kernel keeps running

asyncio.run(main())
"""


@pytest.mark.integration
@pytest.mark.asyncio
async def test_reattach_from_describe_in_a_fresh_process(nanny, manager):

    async with AsyncKernelClient(nanny.connection_info, manager=manager) as client:
        await client.execute("x = 'state survives'", timeout=TIMEOUT)
    saved = {"connection_info": nanny.connection_info, "state": manager.describe()}
    res = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", REATTACH],
        input=json.dumps(saved),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    other = json.loads(res.stdout)
    assert other["manager"] == "NannyManager" and other["alive"] is True
    assert other["out"] == "state survives\n"
    assert other["describe"]["kernel_pid"] == nanny.kernel_pid
    assert other["describe"]["nanny_pid"] == nanny.nanny_pid
    assert await manager.is_alive()  # the other process detached without ending it


@pytest.mark.integration
@pytest.mark.asyncio
async def test_hub_attach_and_shutdown_leave_nothing_running(nanny):
    from kernel_hub import KernelHub

    async with KernelHub(config={}) as hub:
        state = {"nanny_pid": nanny.nanny_pid, "launch_mode": "nanny"}  # as describe() says
        kernel = await hub.attach("ipykernel/python3", nanny.connection_info, state)
        # The core rebuilds it: the ipykernel plugin's make_manager is never asked.
        assert isinstance(kernel.manager, NannyManager)
        assert kernel.describe()["nanny"] is True
        async with kernel.client() as client:
            assert (await client.execute("1", timeout=TIMEOUT)).content["status"] == "ok"
        await kernel.shutdown()
    assert nanny.proc.wait(TIMEOUT) == 0
    assert wait_pid_gone(nanny.kernel_pid, TIMEOUT)


@pytest.mark.integration
def test_blocking_client_uses_the_nanny_from_its_own_loop(nanny):
    from kernel_hub import BlockingKernelClient, KernelHub

    hub = KernelHub(load_entrypoints=False, config={})
    manager = asyncio.run(hub.manager_for(nanny.connection_info, {}))
    with BlockingKernelClient(nanny.connection_info, manager=manager) as client:
        client.wait_for_ready(TIMEOUT)
        assert isinstance(client.async_client.manager, NannyManager)
        reply = client.execute("import os; os.getpid()", timeout=TIMEOUT)
        assert reply.content["status"] == "ok"
        client.interrupt()  # idle kernel: harmless, but it went through the nanny
        assert client.execute("2", timeout=TIMEOUT).content["status"] == "ok"
    assert pid_alive(nanny.kernel_pid)


@pytest.mark.integration
def test_linger_then_exit_when_the_kernel_dies_on_its_own(ipykernel_only_python, nannies):
    started = start_nanny("--linger", "1", python=ipykernel_only_python)
    nannies.append(started)
    os.kill(started.kernel_pid, 9)
    assert started.proc.wait(TIMEOUT) == 0
    assert not os.path.exists(started.workdir)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_daemon_detaches_and_shutdown_ends_it(ipykernel_only_python, nannies):
    started = start_nanny("--daemon", python=ipykernel_only_python)
    nannies.append(started)
    assert started.proc.wait(TIMEOUT) == 0  # the parent relayed the handshake and left
    assert started.nanny_pid != started.proc.pid
    assert os.getsid(started.nanny_pid) == started.nanny_pid
    assert os.path.exists(os.path.join(started.workdir, "nanny.log"))
    mgr = NannyManager(started.connection_info)
    async with AsyncKernelClient(started.connection_info, manager=mgr) as client:
        assert (await client.execute("1", timeout=TIMEOUT)).content["status"] == "ok"
    await mgr.cleanup()
    assert wait_pid_gone(started.nanny_pid, TIMEOUT)
    assert wait_pid_gone(started.kernel_pid, TIMEOUT)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_kernel_that_fails_to_start_explains_itself(nannies):

    argv = [sys.executable, "-c", "import sys; print('boom: no such module'); sys.exit(3)"]
    started = start_nanny("--argv", json.dumps(argv), "--linger", "60")
    nannies.append(started)
    mgr = NannyManager(started.connection_info, {"kernel_pid": started.kernel_pid})
    try:
        assert await asyncio.wait_for(mgr.wait(), TIMEOUT) == 3
        assert "boom: no such module" in await mgr.last_output()
        with pytest.raises(Exception, match="unknown op 'nope'"):
            await mgr._request("nope")
    finally:
        await mgr.cleanup()
    assert started.proc.wait(TIMEOUT) == 0


def test_handshake_error_without_pyzmq(tmp_path):
    uv = os.environ.get("UV") or shutil.which("uv")
    venv = tmp_path / "bare"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    with pytest.raises(RuntimeError, match=r"pyzmq is not installed for .*pip install ipykernel"):
        start_nanny(python=str(venv / "bin" / "python"))


def test_handshake_error_without_ipykernel(monkeypatch, capsys):
    import importlib.util

    from kernel_hub import nanny as nanny_module

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "ipykernel" else real_find_spec(name, *args),
    )
    assert nanny_module.main(["--linger", "0"]) == 1
    out = capsys.readouterr().out
    assert out.startswith('{"error": "ipykernel is not installed for ')
    assert f"run: {sys.executable} -m pip install ipykernel" in out


@pytest.mark.integration
@pytest.mark.asyncio
async def test_cwd_env_and_kernel_name_reach_the_kernel(ipykernel_only_python, nannies, tmp_path):

    started = start_nanny(
        "--cwd",
        str(tmp_path),
        "--env",
        json.dumps({"KH_NANNY_TEST": "far away"}),
        "--kernel-name",
        "py-remote",
        python=ipykernel_only_python,
    )
    nannies.append(started)
    assert started.connection_info["kernel_name"] == "py-remote"
    async with AsyncKernelClient(started.connection_info) as client:
        code = "import os, sys; print(os.getcwd(), os.environ['KH_NANNY_TEST'], sys.prefix)"
        _, out = await execute_output(client, code, timeout=TIMEOUT)
    venv = os.path.dirname(os.path.dirname(ipykernel_only_python))
    assert out.strip() == f"{tmp_path} far away {venv}"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_nanny_runs_on_python38(nannies):
    python38 = find_python38()
    if python38 is None:
        pytest.skip("no Python 3.8 on this machine (PATH or pyenv); nanny.py targets >= 3.8")
    with ipykernel_venv(python38) as python:
        started = start_nanny(python=python)
        nannies.append(started)
        mgr = NannyManager(started.connection_info)
        async with AsyncKernelClient(started.connection_info, manager=mgr) as client:
            code = "import sys; print(sys.version_info[:2])"
            _, out = await execute_output(client, code, timeout=TIMEOUT)
            assert out == "(3, 8)\n"
            waiter = asyncio.ensure_future(mgr.wait())
            nanny_pid = await mgr.restart()
            started.kernel_pids.append(nanny_pid)
            await mgr.kill()
            assert await asyncio.wait_for(waiter, TIMEOUT) == -9
            await mgr.cleanup()
        assert started.proc.wait(TIMEOUT) == 0


@pytest.mark.asyncio
async def test_failed_restart_is_an_error_reply_and_the_nanny_still_lingers_out(nannies, tmp_path):

    from kernel_hub.contract.errors import KernelHubError

    program = tmp_path / "fake-kernel"
    program.write_text("#!/bin/sh\nexec sleep 600\n")
    program.chmod(0o700)
    started = start_nanny("--argv", json.dumps([str(program)]), "--linger", "1")
    nannies.append(started)
    mgr = NannyManager(started.connection_info)
    try:
        assert await mgr.is_alive()
        program.unlink()
        with pytest.raises(KernelHubError, match="refused 'restart'.*cannot start the kernel"):
            await mgr.restart()
        assert not await mgr.is_alive()
    finally:
        mgr.close()
    assert started.proc.wait(TIMEOUT) == 0  # no kernel, no restart: it leaves after --linger
    assert not os.path.exists(started.workdir)


@pytest.mark.asyncio
async def test_forged_events_cannot_fake_a_death(caplog):
    """A fake nanny (an XPUB socket of the test) publishes a forged, then a real kernel_died."""
    import zmq

    key = "k" * 64
    real, forger = Session(key), Session("x" * 64)
    xpub = zmq.Context.instance().socket(zmq.XPUB)
    xpub.linger = 0
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    info = {"ip": "127.0.0.1", "key": key, "nanny_control_port": 1, "nanny_events_port": port}
    mgr = NannyManager(info, {"kernel_pid": 42})
    try:
        waiter = asyncio.ensure_future(mgr.wait())
        while not xpub.poll(0):
            await asyncio.sleep(0.01)  # the fake's socket; the manager never polls
        assert xpub.recv() == b"\x01"  # the manager subscribed

        def publish(session, kind, content):
            xpub.send_multipart([kind.encode(), *session.serialize(session.msg(kind, content))])

        publish(real, "nanny_welcome", {"alive": True, "kernel_pid": 42, "exit_status": None})
        with caplog.at_level(logging.WARNING, "kernel_hub.remote"):
            # a flood of forgeries (below the socket's high-water mark): counted, one log line
            for _ in range(500):
                publish(forger, "kernel_died", {"exit_status": 0, "kernel_pid": 42})
            publish(real, "kernel_died", {"exit_status": -15, "kernel_pid": 42})
            assert await asyncio.wait_for(waiter, TIMEOUT) == -15
        assert mgr.bad_signatures == 500
        lines = [r.getMessage() for r in caplog.records if r.name == "kernel_hub.remote"]
        assert len(lines) == 1 and "bad signature" in lines[0], lines
    finally:
        mgr.close()
        xpub.close()


def test_no_top_level_name_of_the_package_shadows_the_standard_library():
    # Run by path, the nanny has kernel_hub/ first on sys.path (docs/nanny-protocol.md).
    import kernel_hub

    top = {p.stem for p in Path(kernel_hub.__file__).parent.iterdir() if p.name != "__init__.py"}
    assert not top & set(sys.stdlib_module_names), top & set(sys.stdlib_module_names)
