"""The nanny and NannyManager, with real processes.

The nanny runs as a remote provider runs it: ``python - < nanny.py``, by default
in a fresh venv that has nothing but ipykernel (no kernel_hub, no jupyter_client
of ours). Every nanny a test starts is stopped in teardown, failed test or not,
and its pids are checked to be gone.
"""

from __future__ import annotations

import ast
import asyncio
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import pytest_asyncio

from kernel_hub import AsyncKernelClient, KernelType
from kernel_hub.errors import LaunchError
from kernel_hub.nanny import Signer, source
from kernel_hub.plugins import HookRelay
from kernel_hub.remote import NannyManager
from kernel_hub.session import Session
from kernel_hub.testing import NannyProcess, pid_alive, start_nanny, wait_pid_gone

TIMEOUT = 30


# ---- fixtures ----


@pytest.fixture(scope="session")
def ipykernel_only_python() -> Iterator[str]:
    """The python of a fresh venv with only ipykernel (and its dependencies) installed."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is needed to build the ipykernel-only venv: python3 -m pip install uv")
    with tempfile.TemporaryDirectory(prefix="kh-ipykernel-only-") as tmp:
        venv = os.path.join(tmp, "venv")
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, venv], check=True)
        python = os.path.join(venv, "bin", "python")
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", python, "ipykernel"],
            check=True,
            env={**os.environ, "VIRTUAL_ENV": venv},
        )
        yield python


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


def test_source_is_one_self_contained_python38_file():
    text = source()
    tree = ast.parse(text, feature_version=(3, 8))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative imports cannot be shipped"
            imported.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.Match):  # pragma: no cover - ast.parse already refuses it
            pytest.fail("match statements need Python 3.10")
        elif isinstance(node, ast.keyword) and node.arg == "strict":
            pytest.fail("zip(strict=) needs Python 3.10")
        elif isinstance(node, ast.Attribute) and node.attr == "UTC":
            pytest.fail("datetime.UTC needs Python 3.11")
    assert imported - STDLIB - {"__future__"} == {"zmq"}
    # side-effect free at import, runnable as python - < nanny.py
    assert 'if __name__ == "__main__":' in text


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
            hub=hub, kernel_type=kt, connection_info=info, state=state
        )
    )
    assert isinstance(mgr, NannyManager)
    assert mgr.describe() == {"nanny": True, "nanny_pid": 10, "kernel_pid": 11, "extra": "kept"}
    assert repr(mgr) == "<NannyManager far/away [RUNNING pid=11 nanny=127.0.0.1:1]>"
    with pytest.raises(LaunchError, match="no installed plugin can manage"):
        asyncio.run(
            HookRelay(plugin_manager).make_manager(
                hub=hub, kernel_type=kt, connection_info={"key": "x"}, state={}
            )
        )


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
async def test_client_builds_its_own_nanny_manager_runs_code_and_kill_wakes_wait(nanny):
    client = AsyncKernelClient(nanny.connection_info)
    assert isinstance(client.manager, NannyManager)
    async with client:
        out = []
        reply = await client.execute(
            "import os; print(os.getppid())",
            output_hook=lambda m: out.append(m.content.get("text", "")),
            timeout=TIMEOUT,
        )
        assert reply.content["status"] == "ok"
        assert "".join(out).strip() == str(nanny.nanny_pid)
        mgr = client.manager
        assert await mgr.is_alive()
        waiter = asyncio.ensure_future(mgr.wait())
        await mgr.kill()
        assert await asyncio.wait_for(waiter, TIMEOUT) == -9
        assert mgr.exit_status == -9 and not await mgr.is_alive()
        assert not pid_alive(nanny.kernel_pid)
