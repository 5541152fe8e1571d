"""A pool's spare serves more launches (issue 26 item 1): a named id, on_launched, another cwd/env.

Real ipykernels throughout; the ``[pool]`` config table's parsing next to the real
``start_configured_pools`` and ``kernel-hub config check`` run as a subprocess.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import os
import sys

import pytest

from kernel_hub import KernelHub
from kernel_hub.testing import EventRecorder, run_cli, wait_pid_gone

PYTHON = "ipykernel/python3"
TIMEOUT = 120

#: Asked of a kernel in one execute_request: what a user of it would see.
LOOK = {
    "cwd": "__import__('os').getcwd()",
    "env": "__import__('os').environ.get('KH_ADAPT_TEST')",
    "session": "globals().get('__session__')",
    "dh": "[str(p) for p in _dh]",
    "path": "[p for p in __import__('sys').path if not p.endswith('-packages')]",
    "mine": "'_kernel_hub_adapt' in globals()",
    "imported": "__import__('nbmodule').WHERE",
}


async def look(kernel) -> tuple[dict, int]:
    """Return what LOOK's expressions evaluate to in *kernel*, and the cell's execution count."""
    async with kernel.client() as client:
        reply = await client.execute("pass", user_expressions=LOOK, timeout=60)
    values = reply.content["user_expressions"]
    bad = {k: v for k, v in values.items() if v["status"] != "ok"}
    assert not bad, bad
    seen = {k: ast.literal_eval(v["data"]["text/plain"]) for k, v in values.items()}
    return seen, reply.content["execution_count"]


def kernel_pid(kernel) -> int:
    """The kernel process's pid (under a nanny too: a hub with a state dir runs one)."""
    return int(kernel.state.get("kernel_pid") or kernel.manager.pid)


def notebook_dir(tmp_path, name="notebooks"):
    where = tmp_path / name
    where.mkdir()
    (where / "nbmodule.py").write_text(f"WHERE = {str(where)!r}\n")
    return where


# ---- a named id, on_launched ----


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_spare_serves_a_launch_that_names_its_kernel_id(tmp_path):
    state = tmp_path / "state"
    async with KernelHub(config={}, state_dir=state) as hub:
        rec = EventRecorder(hub)
        pool = await hub.pool(PYTHON, size=1, restart=False)
        await pool.wait_full(timeout=TIMEOUT)
        (spare,) = pool.spares
        former = spare.id
        assert (state / f"{former}.json").exists()  # recorded as a spare
        kernel = await hub.launch(PYTHON, kernel_id="jupyter-id-1", restart=False)
        assert kernel is spare and kernel.id == "jupyter-id-1" and pool.handed_out == 1
        assert hub.kernels["jupyter-id-1"] is kernel and former not in hub.kernels
        assert kernel.describe()["kernel_id"] == "jupyter-id-1"
        assert kernel.describe()["launch_id"] == former
        assert "jupyter-" in repr(kernel.restarter) and former[:8] not in repr(kernel.restarter)
        (ready,) = rec.of("jupyter-id-1", "ready")
        assert ready.data == {"pooled": True, "spare": former}
        # The state dir: its record under the new id; the spare's is gone.
        record = json.loads((state / "jupyter-id-1.json").read_text())
        assert record["pooled"] is False and record["kernel"]["kernel_id"] == "jupyter-id-1"
        assert not (state / f"{former}.json").exists()
        # A provider emits under the id it launched the spare with: the hub says the new one.
        hub.emit("progress", former, PYTHON, step="test")
        await rec.wait_for("progress", "jupyter-id-1", timeout=10)
        async with kernel.client() as client:
            assert (await client.execute("x = 1", timeout=60)).content["status"] == "ok"
        # Its death is the new id's (restart=False: it ends), and its record goes.
        pid = kernel_pid(kernel)
        os.kill(pid, 9)
        await rec.wait_for("died", "jupyter-id-1", timeout=TIMEOUT)
        await asyncio.wait_for(kernel.wait(), TIMEOUT)
        assert "jupyter-id-1" not in hub.kernels
        assert not (state / "jupyter-id-1.json").exists()
        assert rec.of(former, "died") == []
        await pool.wait_full(timeout=TIMEOUT)  # it refilled meanwhile
    assert wait_pid_gone(pid, 30)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_spare_serves_a_launch_with_on_launched_and_calls_it_at_once():
    async with KernelHub(config={}) as hub:
        pool = await hub.pool(PYTHON, size=1, restart=False)
        await pool.wait_full(timeout=TIMEOUT)
        (spare,) = pool.spares
        got = []
        kernel = await hub.launch(PYTHON, restart=False, on_launched=got.append)
        assert kernel is spare
        (started,) = got
        assert dict(started.connection_info) == kernel.connection_info
        assert started.manager is kernel.manager and dict(started.state) == kernel.state
        assert await started.signal(0) is True  # it answered long ago: nothing is held


# ---- another cwd and env ----


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_spare_adapted_to_another_cwd_and_env_looks_like_a_cold_kernel(tmp_path):
    where = notebook_dir(tmp_path)
    session = str(where / "analysis.ipynb")
    env = {"JPY_SESSION_NAME": session, "KH_ADAPT_TEST": "adapted"}
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        pool = await hub.pool(PYTHON, size=1, restart=False)  # adapt: the default
        await pool.wait_full(timeout=TIMEOUT)
        (spare,) = pool.spares
        kernel = await hub.launch(
            PYTHON, kernel_id="nb-kernel", cwd=str(where), env=env, restart=False
        )
        assert kernel is spare and pool.adapted == 1
        assert rec.of("nb-kernel", "ready")[0].data == {
            "pooled": True,
            "adapted": True,
            "spare": kernel.launch_id,
        }
        assert kernel.request.cwd == str(where) and dict(kernel.request.env) == env
        adapted, count = await look(kernel)
        assert count == 1  # the adaptation ran silently: no history, no execution count
        # The same launch with no pool: what the adapted kernel must look like.
        cold = await hub.launch(
            PYTHON, cwd=str(where), env=env, params={"cold": True}, restart=False
        )
        assert cold is not spare and pool.handed_out == 1
        reference, _ = await look(cold)
    assert adapted == reference
    assert adapted["cwd"] == str(where) and adapted["env"] == "adapted"
    assert adapted["session"] == session and adapted["dh"] == [str(where)]
    assert adapted["imported"] == str(where) and adapted["mine"] is False


@pytest.mark.integration
@pytest.mark.asyncio
async def test_no_adaptation_for_other_types_start_up_env_or_adapt_false(tmp_path, monkeypatch):
    # A spec type whose language is not python, running a real ipykernel.
    spec = tmp_path / "share" / "kernels" / "notpython"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec_json = {"argv": argv, "display_name": "not python", "language": "notpython"}
    (spec / "kernel.json").write_text(json.dumps(spec_json))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share"))
    where = notebook_dir(tmp_path)
    async with KernelHub(config={}) as hub:
        other = await hub.pool("spec/notpython", size=1, restart=False)
        python = await hub.pool(PYTHON, size=1, restart=False)
        await other.wait_full(timeout=TIMEOUT)
        await python.wait_full(timeout=TIMEOUT)
        spares = [*other.spares, *python.spares]
        cold = await hub.launch("spec/notpython", cwd=str(where), restart=False)
        assert cold not in spares and other.handed_out == 0
        seen, _ = await look(cold)
        assert seen["cwd"] == str(where)  # a cold start, in the launch's directory
        # PYTHONPATH is read at start-up only: a cold kernel, where it takes effect.
        env = {"PYTHONPATH": str(where), "KH_ADAPT_TEST": "x"}
        started = await hub.launch(PYTHON, env=env, restart=False)
        assert started not in spares and python.handed_out == 0
        # adapt=False: exact matching only.
        await hub.pool(PYTHON, size=1, restart=False, adapt=False)
        exact = await hub.launch(PYTHON, cwd=str(where), restart=False)
        assert exact not in spares and python.handed_out == 0 and python.adapted == 0


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_failed_adaptation_ends_the_spare_and_starts_a_cold_kernel(tmp_path, caplog):
    from kernel_hub import AsyncKernelClient

    where = notebook_dir(tmp_path)
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        pool = await hub.pool(PYTHON, size=1, restart=False)
        await pool.wait_full(timeout=TIMEOUT)
        (spare,) = pool.spares
        spare_pid, spare_file = kernel_pid(spare), spare.state["connection_file"]
        # Break the spare the way user code could: os.chdir no longer works in it.
        async with AsyncKernelClient(spare.connection_info) as client:
            await client.wait_for_ready(60)
            await client.execute("import os; os.chdir = None", timeout=60)
        with caplog.at_level(logging.WARNING, logger="kernel_hub"):
            kernel = await hub.launch(PYTHON, cwd=str(where), kernel_id="cold-one", restart=False)
        assert kernel is not spare and kernel.id == "cold-one" and kernel.launch_id == "cold-one"
        assert pool.adapt_failures == 1 and pool.adapted == 0
        assert spare.status == "DEAD" and list(hub.kernels) == ["cold-one"]
        assert "could not be handed out" in caplog.text and "os.chdir" not in hub.kernels
        assert rec.of("cold-one", "ready")[0].data == {}  # a fresh launch's ready
        seen, _ = await look(kernel)
        assert seen["cwd"] == str(where)
        await pool.wait_full(timeout=TIMEOUT)  # the pool goes on
        assert pool.spares[0] is not spare
    assert wait_pid_gone(spare_pid, 30)
    assert not os.path.exists(spare_file)


# ---- the [pool] table ----


def test_the_pool_table_parses_and_names_mistakes():
    from kernel_hub.plugins.pools import SCHEMA

    parsed = SCHEMA.parse(
        {
            "ipykernel/python3": {"size": 2},
            "spec/other": {"size": 1, "adapt": False, "env": {"A": "b"}, "cwd": "/tmp"},
            "spec/typo": {"sise": 1},
            "spec/negative": {"size": -1},
            "spec/nosize": {"adapt": True},
            "spec/badenv": {"size": 1, "env": {"A": 1}},
            "notatypeid": {"size": 1},
        },
        file="/c.toml",
    )
    assert sorted(parsed.types) == ["ipykernel/python3", "spec/other"]
    default = parsed.types["ipykernel/python3"]
    assert (default.size, default.adapt, default.cwd, default.env) == (2, True, None, {})
    assert default.ready_timeout == 60.0 and default.nanny is False
    other = parsed.types["spec/other"]
    assert (other.adapt, other.env, other.cwd) == (False, {"A": "b"}, "/tmp")
    lines = {p.table: str(p) for p in parsed.problems}
    assert all("\n" not in line for line in lines.values())
    assert "did you mean 'size'" in lines["pool.spec/typo"]
    assert 'kernel_hub config /c.toml: [pool."spec/typo"]' in lines["pool.spec/typo"]
    assert "'size' must be 0 or more, not -1" in lines["pool.spec/negative"]
    assert "needs 'size'" in lines["pool.spec/nosize"]
    assert "'env'" in lines["pool.spec/badenv"]
    assert "'<provider>/<name>'" in lines["pool.notatypeid"]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_start_configured_pools_starts_the_tables_pools_and_a_plain_hub_none(caplog):
    config = {
        "pool": {
            PYTHON: {"size": 1, "adapt": False},
            "ipykernel/no-such-kernel": {"size": 1},
        }
    }
    async with KernelHub(config=config) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        assert hub.pools == []  # a plain hub starts no pool, even with the table there
        await kernel.shutdown()
        assert await hub.start_configured_pools(type_ids=["spec/python3"]) == []
        with caplog.at_level(logging.WARNING, logger="kernel_hub"):
            (pool,) = await hub.start_configured_pools()
        assert 'pool."ipykernel/no-such-kernel"] is left out' in caplog.text
        assert (pool.type_id, pool.size, pool.adapt) == (PYTHON, 1, False)
        await pool.wait_full(timeout=TIMEOUT)
        (spare,) = pool.spares
        assert await hub.launch(PYTHON, restart=False) is spare
        # Again: the same pool, resized to the table's size.
        assert await hub.start_configured_pools() == [pool]
    assert hub.pools == [] and pool.spares == []


def test_config_check_shows_the_pool_table(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[pool."ipykernel/python3"]\nsize = 2\n[pool."spec/python3"]\nsise = 1\n')
    result = run_cli("config", "check", env={"KERNEL_HUB_CONFIG": str(path)})
    assert result.returncode == 2, result
    lines = result.stdout.splitlines()
    assert "[pool.ipykernel/python3]  ok" in lines
    assert any(
        line.split()
        == [
            "size",
            "=",
            "2",
            "(config)",
            "#",
            "how",
            "many",
            "kernels",
            "to",
            "keep",
            "started",
            "and",
            "ready",
        ]
        for line in lines
    )
    assert any(line.startswith("  adapt") and "true  (default)" in line for line in lines)
    (error,) = [line for line in lines if line.startswith("[pool.spec/python3]")]
    assert "ERROR" in error and "did you mean 'size'" in error
