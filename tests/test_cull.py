"""Idle culling that sees real work (issue 23 item 3): real ipykernels, a real nanny.

A kernel is culled after ``idle`` seconds of doing nothing; an execution in progress
or CPU use by its processes is work, so a silent computation, a printing one and a
thread computing after its execution replied are all kept.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from kernel_hub import CullPolicy, KernelHub
from kernel_hub.lifecycle.culler import Culler
from kernel_hub.plugins.culling import SCHEMA, policy_from
from kernel_hub.testing import EventRecorder

PYTHON = "ipykernel/python3"
TIMEOUT = 120

SPIN = "print('go', flush=True)\nwhile True: pass"
PRINT = (
    "import time\nprint('go', flush=True)\nwhile True:\n    print('.', flush=True)\n"
    "    time.sleep(0.05)"
)
SLEEP = "import time\nprint('go', flush=True)\ntime.sleep(3600)"
#: A thread that computes after its execution has replied: the kernel is idle, and working.
THREAD = (
    "import threading\n"
    "def spin():\n"
    "    while True: pass\n"
    "threading.Thread(target=spin, daemon=True).start()"
)


async def _start(kernel, code: str):
    """Run *code* on *kernel* until it prints ``go``; return the client and the execution."""
    client = kernel.client()
    await client.connect()
    go = asyncio.Event()

    def on_output(msg) -> None:
        if msg.header["msg_type"] == "stream" and "go" in msg.content.get("text", ""):
            go.set()

    task = asyncio.ensure_future(client.execute(code, output_hook=on_output, timeout=None))
    await asyncio.wait_for(go.wait(), TIMEOUT)
    return client, task


async def _stop(client, task) -> None:
    """Interrupt the execution (a kernel that is left spinning ends by a kill, 5 s later)."""
    if not task.done():
        await client.interrupt()
        await asyncio.wait({task}, timeout=TIMEOUT)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.close()


@pytest.mark.integration
@pytest.mark.timeout(400)
@pytest.mark.asyncio
async def test_an_idle_kernel_is_culled_and_silent_printing_or_threaded_work_is_kept():
    policy = CullPolicy(idle=3, interval=0.5)
    async with KernelHub(config={}, cull=policy) as hub:
        rec = EventRecorder(hub)
        idle, silent, printing, threaded = await asyncio.gather(
            *(hub.launch(PYTHON, restart=False) for _ in range(4))
        )
        s_client, s_task = await _start(silent, SPIN)
        p_client, p_task = await _start(printing, PRINT)
        async with threaded.client() as c:
            reply = await c.execute(THREAD, timeout=TIMEOUT)
            assert reply.content["status"] == "ok"
        try:
            culled = await rec.wait_for("culled", idle.id, timeout=TIMEOUT)
            assert culled.data["reason"] == "idle" and culled.data["inactive_for"] >= 3
            await rec.wait_for("shutdown", idle.id, timeout=TIMEOUT)
            assert idle.id not in hub.kernels  # the registry honours it
            # Twice the idle time more, at least: the others would have been culled by now.
            assert hub.culler is not None
            await asyncio.wait_for(hub.culler.wait_checks(2 * 3 * 2 + 1), TIMEOUT)
            for kernel in (silent, printing, threaded):
                assert kernel.status == "RUNNING", kernel
                assert rec.of(kernel.id, "culled") == []
            assert threaded.execution_state == "idle"  # kept for its CPU use alone
        finally:
            await _stop(s_client, s_task)
            await _stop(p_client, p_task)


@pytest.mark.integration
@pytest.mark.timeout(400)
@pytest.mark.asyncio
async def test_a_kernel_busy_without_cpu_is_culled_when_the_policy_says_so():
    policy = CullPolicy(idle=3600, busy=3, interval=0.5)
    async with KernelHub(config={}, cull={"*": None, PYTHON: policy}) as hub:
        rec = EventRecorder(hub)
        stuck, spinning = await asyncio.gather(
            *(hub.launch(PYTHON, restart=False) for _ in range(2))
        )
        st_client, st_task = await _start(stuck, SLEEP)
        sp_client, sp_task = await _start(spinning, SPIN)
        try:
            culled = await rec.wait_for("culled", stuck.id, timeout=TIMEOUT)
            assert culled.data["reason"] == "busy without CPU"
            assert hub.culler is not None
            await asyncio.wait_for(hub.culler.wait_checks(2 * 3 * 2 + 1), TIMEOUT)
            assert spinning.status == "RUNNING" and rec.of(spinning.id, "culled") == []
        finally:
            await _stop(st_client, st_task)
            await _stop(sp_client, sp_task)


async def _cpu_grows(kernel) -> float:
    """Return the kernel's CPU seconds once they grew by a second's worth of spinning."""
    first = await kernel.manager.cpu_seconds()
    assert first is not None and first > 0
    while True:
        now = await kernel.manager.cpu_seconds()
        assert now is not None
        if now - first >= 0.5:
            return now
        await asyncio.sleep(0.2)


@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.parametrize("nanny", [False, True], ids=["local", "nanny"])
@pytest.mark.asyncio
async def test_cpu_seconds_counts_the_whole_process_group(nanny):
    """A child process computing counts, and the nanny measures on its machine."""
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False, nanny=nanny)
        assert type(kernel.manager).__name__.endswith(
            "NannyManager" if nanny else "SubprocessManager"
        )
        code = (
            "import subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
            "print('go', flush=True)"
        )
        async with kernel.client() as c:
            reply = await c.execute(code, timeout=TIMEOUT)
            assert reply.content["status"] == "ok"
            await asyncio.wait_for(_cpu_grows(kernel), TIMEOUT)
            await c.execute("child.kill(); child.wait()", timeout=TIMEOUT)
    assert await kernel.manager.cpu_seconds() is None  # ended: nothing to measure


def test_group_cpu_seconds_sees_a_spinning_group_and_not_a_missing_one():
    from kernel_hub.managers import procs

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        procs._cpu_snapshot = (-procs.CPU_SNAPSHOT_AGE, {})
        first = procs.group_cpu_seconds(child.pid)
        assert first is not None
        while (value := procs.group_cpu_seconds(child.pid)) is not None and value - first < 0.3:
            assert time.monotonic() < deadline
            time.sleep(0.1)  # polling a counter, not synchronising with the child
        assert value is not None
        from kernel_hub import nanny

        assert nanny._group_cpu_seconds(child.pid) is not None
    finally:
        child.kill()
        child.wait()
    procs._cpu_snapshot = (-procs.CPU_SNAPSHOT_AGE, {})
    assert procs.group_cpu_seconds(child.pid) is None
    assert nanny._group_cpu_seconds(child.pid) is None


# ---- pure logic: the judge and the config ----


def _fake(state: str, last_activity: float, clients: int = 0):
    return SimpleNamespace(
        id="k1",
        type_id="t/x",
        status="RUNNING",
        execution_state=state,
        last_activity=last_activity,
        client_count=clients,
    )


def test_the_judge_counts_cpu_clients_and_busy_as_the_policy_says():
    culler = Culler(list, lambda k: None, 1.0, lambda *a, **k: None)
    judge = culler._judge
    p = CullPolicy(idle=10, busy=20, cpu=0.1)
    k = _fake("idle", last_activity=0)
    assert judge(k, p, 5.0, now=0) is None  # first sight: a baseline
    assert judge(k, p, 5.0, now=9) is None
    assert judge(k, p, 5.0, now=11) == ("idle", 11)
    assert judge(k, p, 7.0, now=12) is None  # 2 CPU-seconds in 1 s: working
    assert judge(k, p, 7.05, now=22.5) == ("idle", 10.5)  # 0.05 in 10.5 s: below 0.1/s
    k.execution_state = "busy"
    assert judge(k, p, 7.05, now=30) is None  # busy 18 s without CPU: not yet
    assert judge(k, p, 7.05, now=33) == ("busy without CPU", 21)
    assert judge(k, CullPolicy(idle=10), 7.05, now=1000) is None  # busy=None: never
    k.execution_state, k.client_count = "idle", 1
    assert judge(k, CullPolicy(idle=10, connected=True), None, now=2000) is None
    assert judge(k, CullPolicy(idle=10, connected=True), None, now=2005) is None
    assert judge(k, CullPolicy(idle=10), None, now=2016) == ("idle", 11)


def test_the_culling_table_merges_per_type_over_hub_wide_and_names_typos():
    parsed = SCHEMA.parse(
        {
            "idle": 3600,
            "ssh/gpu-box": {"idle": 600, "busy": 7200},
            "spec/off": {"idle": 0},
            "spec/bad": {"idel": 5},
        }
    )
    assert policy_from(parsed.settings) == CullPolicy(idle=3600)
    assert policy_from(parsed.settings, parsed.types["ssh/gpu-box"]) == CullPolicy(
        idle=600, busy=7200
    )
    assert policy_from(parsed.settings, parsed.types["spec/off"]) is None
    (problem,) = parsed.problems
    assert '[culling."spec/bad"]' in str(problem) and "did you mean 'idle'" in str(problem)
    assert policy_from(SCHEMA.parse({}).settings) is None  # no table: no culling


@pytest.mark.asyncio
async def test_the_hub_resolves_policies_api_first_then_config_per_type():
    config = {"culling": {"idle": 100, "spec/a": {"idle": 50}}}
    mine = CullPolicy(idle=5)
    async with KernelHub(config=config, load_entrypoints=False) as hub:
        assert hub.cull_policy("spec/a") == CullPolicy(idle=50)
        assert hub.cull_policy("spec/b") == CullPolicy(idle=100)
    hub = KernelHub(config=config, load_entrypoints=False, cull={"*": mine, "spec/c": None})
    assert hub.cull_policy("spec/a") == CullPolicy(idle=50)  # the type's table is more specific
    assert hub.cull_policy("spec/b") == mine
    assert hub.cull_policy("spec/c") is None
    assert KernelHub(config={}, load_entrypoints=False).cull_policy("spec/a") is None
    with pytest.raises(TypeError, match=r"cull\['\*'\] is 600; give a kernel_hub.CullPolicy"):
        KernelHub(config={}, load_entrypoints=False, cull={"*": 600})


def test_config_check_reports_the_culling_table(tmp_path):
    from kernel_hub.testing import run_cli

    path = tmp_path / "config.toml"
    path.write_text('[culling]\nidle = 600\n[culling."ssh/gpu"]\nbusy = "x"\n')
    result = run_cli("config", "check", env={"KERNEL_HUB_CONFIG": str(path)})
    assert result.returncode == 2, result
    assert "[culling]  ok" in result.stdout
    assert '[culling."ssh/gpu"]' in result.stdout and "busy" in result.stdout


@pytest.mark.integration
@pytest.mark.timeout(400)
@pytest.mark.asyncio
async def test_a_pooled_kernel_is_culled_once_handed_out_and_spares_never_are():
    async with KernelHub(config={}, cull=CullPolicy(idle=2, interval=0.5)) as hub:
        rec = EventRecorder(hub)
        pool = await hub.pool(PYTHON, size=1, restart=False)
        await pool.wait_full(timeout=TIMEOUT)
        kernel = await hub.launch(PYTHON, restart=False)
        assert pool.handed_out == 1
        await pool.wait_full(timeout=TIMEOUT)
        (spare,) = pool.spares
        culled = await rec.wait_for("culled", kernel.id, timeout=TIMEOUT)
        assert culled.data["reason"] == "idle"
        assert hub.culler is not None
        await asyncio.wait_for(hub.culler.wait_checks(2 * 2 * 2 + 1), TIMEOUT)
        assert pool.spares == [spare] and spare.status == "RUNNING"
        assert rec.of(spare.id, "culled") == []
