"""The restarter with real kernels: death, backoff, limits, purposeful shutdown, manual restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from kernel_hub import (
    KernelDied,
    KernelHub,
    KernelHubError,
    KernelType,
    RestartPolicy,
    SubprocessManager,
    hookimpl,
    launch_subprocess,
)
from kernel_hub.lifecycle.restarter import RestartBudget
from kernel_hub.testing import EventRecorder, ForeignClient, pid_alive, spawn_grandchild
from kernel_hub.wire.connection import CHANNELS

PYTHON = "ipykernel/python3"
#: Small backoffs keep the tests fast; jitter stays on so that it is exercised.
FAST = RestartPolicy(limit=3, window=60, backoff_initial=0.1, backoff_max=1, jitter=0.5)

IPYKERNEL_ARGV = (sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}")
EXIT_AT_ONCE = (sys.executable, "-c", "import sys; sys.exit(3)")


def crash_looping_plugin() -> type:
    """Return a provider whose first launch is a real ipykernel and every later one exits (3).

    It records ``time.time()`` of each launch, to measure the backoff between attempts.
    """

    class CrashLoop:
        name = "crashloop"
        launches: list[float] = []

        @staticmethod
        @hookimpl
        def find_kernel_types(hub):
            return [KernelType(provider="crashloop", name="k", argv=IPYKERNEL_ARGV)]

        @staticmethod
        @hookimpl
        def launch(hub, kernel_type, request):
            if kernel_type.provider != "crashloop":
                return None
            argv = IPYKERNEL_ARGV if not CrashLoop.launches else EXIT_AT_ONCE
            CrashLoop.launches.append(time.time())
            return launch_subprocess(kernel_type, request, argv=argv)

        @staticmethod
        @hookimpl
        def make_manager(hub, kernel_type, connection_info, state):
            if kernel_type.provider != "crashloop":
                return None
            return SubprocessManager.from_state(state)

        @staticmethod
        @hookimpl
        def restart_policy(hub, kernel_type):
            return FAST if kernel_type.provider == "crashloop" else None

    return CrashLoop


async def gone(pid: int, timeout: float = 10.0) -> bool:
    """Return whether *pid* has ended (or is a zombie) within *timeout* seconds (observation)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        await asyncio.sleep(0.02)
    return False


# ---- pure logic ----


def test_budget_counts_within_the_window_and_resets_when_stable():
    now = [100.0]
    budget = RestartBudget(RestartPolicy(limit=2, window=10, stable_after=5), clock=lambda: now[0])
    assert budget.next_attempt() == 1
    budget.record()
    assert budget.next_attempt() == 2
    budget.record()
    assert budget.next_attempt() is None
    assert repr(budget) == "<RestartBudget 2/2 in 10 s>"
    now[0] += 10  # both restarts slid out of the window
    assert budget.next_attempt() == 1
    budget.record()
    budget.ran_for(4.9)
    assert budget.used == 1
    budget.ran_for(5)
    assert budget.used == 0
    assert RestartBudget(RestartPolicy(limit=0)).next_attempt() is None


def test_the_restarter_is_pure_policy_a_delay_or_no_restart():
    from kernel_hub.lifecycle.restarter import KernelRestarter, Restart

    now = [0.0]
    policy = RestartPolicy(limit=2, window=60, backoff_initial=0.5, backoff_max=4, jitter=0)
    restarter = KernelRestarter(policy, label="t", random=lambda: 0.0, clock=lambda: now[0])
    assert restarter.decide(ran_for=1.0) == Restart(attempt=1, delay=0.5)
    assert restarter.decide(ran_for=None) == Restart(attempt=2, delay=1.0)  # a failed relaunch
    assert restarter.decide(ran_for=None) is None
    assert restarter.why_not() == "2 restarts within 60 s"
    assert restarter.decide(ran_for=policy.stable_after) == Restart(attempt=1, delay=0.5)
    off = KernelRestarter(RestartPolicy(enabled=False))
    assert off.decide(ran_for=100.0) is None and off.why_not() == "its restart policy is off"
    assert repr(restarter) == "<KernelRestarter t [STOPPED restarts=1/2]>"


def test_backoff_doubles_up_to_the_cap_with_jitter_on_top():
    p = RestartPolicy(backoff_initial=0.1, backoff_max=0.3, jitter=0.5)
    assert [p.delay(n) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert p.delay(2, random=0.999) == pytest.approx(0.2 * 1.4995)


# ---- real kernels ----


@pytest.mark.integration
@pytest.mark.asyncio
async def test_kill_9_restarts_and_the_same_client_keeps_working():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=FAST)
        old_pid, old_key = kernel.manager.pid, kernel.connection_info["key"]
        streams = []
        async with kernel.client() as client:
            client.on(
                "iopub", lambda m: streams.append(m) if m.header["msg_type"] == "stream" else None
            )
            await client.execute("x = 1", timeout=60)
            # A request waiting when the kernel dies fails with KernelDied.
            waiting = asyncio.ensure_future(client.execute("import time; time.sleep(60)"))
            await kernel.wait_for_execution_state("busy", timeout=60)
            wire = client._wire  # a plain connection, kept across a same-endpoint restart
            os.kill(old_pid, signal.SIGKILL)
            with pytest.raises(KernelDied):
                await asyncio.wait_for(waiting, 60)
            died = await rec.wait_for("died", kernel.id)
            assert died.data == {"exit_status": -signal.SIGKILL}
            await rec.wait_for("restarted", kernel.id, timeout=60)
            # A new process on the same endpoint: same ports and key.
            assert kernel.manager.pid != old_pid and kernel.connection_info["key"] == old_key
            assert kernel.status == "RUNNING" and kernel.restarts == 1
            assert repr(kernel.restarter).endswith("[WATCHING restarts=1/3]>")
            assert hub.get(kernel.id) is kernel
            # The same client, reconnected: a fresh kernel (x is gone), handlers kept.
            out = []
            reply = await client.execute("print(6*7); x", output_hook=out.append, timeout=60)
            assert reply.content["status"] == "error" and reply.content["ename"] == "NameError"
            assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == ["42\n"]
            assert streams[-1].content["text"] == "42\n"
            assert client.manager is kernel.manager
            assert client._wire is wire and wire.manager is None  # no lifecycle in the wire
        assert rec.kinds(kernel.id) == ["starting", "ready", "died", "restarting", "restarted"]
        restarting = rec.of(kernel.id, "restarting")[0]
        assert restarting.data["attempt"] == 1
        assert FAST.delay(1) <= restarting.data["delay"] <= FAST.delay(1, random=1)
        # The old kernel's files are gone; the new ones exist until shutdown.
        assert Path(kernel.state["connection_file"]).exists()
        await kernel.shutdown()
        assert rec.kinds(kernel.id)[-1] == "shutdown"


def on_first(hub, kind: str, kernel_id: str, start) -> tuple[list, asyncio.Future]:
    """Start the task ``start(order)`` from the hub's first *kind* event of *kernel_id*.

    Returns the list the kernel's event kinds are recorded in (the task may add to it)
    and a future of the task, set from that event's callback.
    """
    order: list = []
    task: asyncio.Future = asyncio.get_running_loop().create_future()

    def callback(event):
        if event.kernel_id != kernel_id:
            return
        order.append(event.kind)
        if event.kind == kind and not task.done():
            task.set_result(asyncio.ensure_future(start(order)))

    hub.events.subscribe(callback)
    return order, task


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_request_made_during_a_restart_waits_for_the_new_kernel():
    # The README's promise: after a death, the same client works again. A request made in
    # the window between "died" and "restarted" is not refused; it waits for the new process.
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=FAST)
        async with kernel.client() as client:

            async def ask(order):
                out = []
                reply = await client.execute("print('back')", output_hook=out.append, timeout=60)
                order.append("execute_reply")
                info = await client.kernel_info(timeout=60)
                order.append("kernel_info_reply")
                return reply, out, info

            order, task = on_first(hub, "died", kernel.id, ask)
            await kernel.manager.signal(signal.SIGKILL)
            reply, out, info = await asyncio.wait_for(await asyncio.wait_for(task, 60), 120)
        assert reply.content["status"] == "ok"
        assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == ["back\n"]
        assert info.content["status"] == "ok"
        # made at "died", answered by the restarted kernel
        assert order == ["died", "restarting", "restarted", "execute_reply", "kernel_info_reply"]
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_request_waiting_for_a_restart_times_out_within_its_own_timeout():
    slow = RestartPolicy(limit=1, window=60, backoff_initial=30, backoff_max=30, jitter=0)
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=slow)
        async with kernel.client() as client:
            rec = EventRecorder(hub)
            await kernel.manager.signal(signal.SIGKILL)
            await rec.wait_for("restarting", kernel.id, timeout=60)  # 30 s of backoff ahead
            with pytest.raises(TimeoutError, match="not back within 0.5 s .*being restarted"):
                await client.complete("impo", timeout=0.5)
            assert kernel.status == "RESTARTING"
            # A shutdown meanwhile ends the wait of a request with no timeout at once.
            waiting = asyncio.ensure_future(client.kernel_info())
            await kernel.shutdown()
            with pytest.raises(KernelDied, match="was shut down"):
                await asyncio.wait_for(waiting, 60)
        assert rec.kinds(kernel.id) == ["died", "restarting", "shutdown"]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_request_made_during_failing_restarts_gets_kernel_died_with_the_reason():
    async with KernelHub(plugins=[crash_looping_plugin()], config={}) as hub:
        kernel = await hub.launch("crashloop/k")
        async with kernel.client() as client:
            _, task = on_first(hub, "died", kernel.id, lambda _: client.kernel_info(timeout=120))
            await kernel.manager.signal(signal.SIGKILL)
            request = await asyncio.wait_for(task, 60)
            with pytest.raises(KernelDied, match="crashloop/k failed: 3 restarts within 60 s"):
                await asyncio.wait_for(request, 120)
            await asyncio.wait_for(kernel.wait(), 60)
            # and at once from now on
            with pytest.raises(KernelDied, match="failed: 3 restarts"):
                await client.execute("1", timeout=60)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_without_restarts_a_request_after_the_death_fails_at_once():
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        async with kernel.client() as client:
            rec = EventRecorder(hub)
            await kernel.manager.signal(signal.SIGKILL)
            await rec.wait_for("died", kernel.id, timeout=60)
            with pytest.raises(KernelDied, match="died \\(exit status -9\\)"):
                await client.kernel_info()  # no timeout: it must not wait for anything


@pytest.mark.integration
@pytest.mark.asyncio
async def test_blocking_client_follows_a_restart():
    # A backoff long enough that the second request is surely made while the kernel is down.
    policy = RestartPolicy(limit=3, window=60, backoff_initial=3, backoff_max=3, jitter=0)
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=policy)
        client = await asyncio.to_thread(kernel.blocking_client)
        try:
            await asyncio.to_thread(client.wait_for_ready, 20)
            await kernel.manager.signal(signal.SIGKILL)
            await rec.wait_for("restarted", kernel.id, timeout=60)
            reply = await asyncio.to_thread(client.execute, "1+1", timeout=20)
            assert reply.content["status"] == "ok"
            assert client.connection_info == kernel.connection_info
            # Asked from its thread between "died" and "restarted", it waits for the new kernel.
            again = EventRecorder(hub)
            await kernel.manager.signal(signal.SIGKILL)
            await again.wait_for("restarting", kernel.id, timeout=60)
            reply = await asyncio.to_thread(client.execute, "2+2", timeout=60)
            assert reply.content["status"] == "ok"
            assert again.kinds(kernel.id) == ["died", "restarting", "restarted"]
        finally:
            await asyncio.to_thread(client.close)
            await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_kernel_dying_at_every_start_fails_after_exactly_the_limit():
    plugin = crash_looping_plugin()
    async with KernelHub(plugins=[plugin], config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch("crashloop/k")
        assert kernel.restart_policy == FAST  # from the plugin's restart_policy hook
        await kernel.manager.signal(signal.SIGKILL)
        failed = await rec.wait_for("failed", kernel.id, timeout=60)
        await asyncio.wait_for(kernel.wait(), 60)
    assert rec.kinds(kernel.id) == [
        "starting",
        "ready",
        "died",
        "restarting",
        "restarting",
        "restarting",
        "failed",
    ]
    assert "3 restarts within 60 s" in failed.data["reason"]
    assert "exited during start-up (exit status 3)" in failed.data["reason"]
    assert len(plugin.launches) == 1 + FAST.limit
    attempts = rec.of(kernel.id, "restarting")
    assert [e.data["attempt"] for e in attempts] == [1, 2, 3]
    # Backoff, measured: each relaunch comes at least its delay after the event announcing it,
    # and the delays grow.
    died = rec.of(kernel.id, "died")[0]
    assert plugin.launches[1] - died.time >= FAST.delay(1)
    for n, event in enumerate(attempts, start=1):
        assert plugin.launches[n] - event.time >= event.data["delay"] - 0.001
        assert FAST.delay(n) <= event.data["delay"] <= FAST.delay(n, random=1)
        if n > 1:
            assert plugin.launches[n] - plugin.launches[n - 1] >= FAST.delay(n)
    assert kernel.status == "DEAD" and kernel.execution_state == "dead"
    assert kernel.id not in hub.kernels


@pytest.mark.integration
@pytest.mark.asyncio
async def test_purposeful_shutdown_and_kill_are_not_restarted():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        polite, now = await asyncio.gather(
            hub.launch(PYTHON, restart=FAST), hub.launch(PYTHON, restart=FAST)
        )
        await polite.shutdown()
        await now.shutdown(now=True)
        for kernel in (polite, now):
            assert rec.kinds(kernel.id) == ["starting", "ready", "shutdown"]
            assert not kernel.restarter.watching
            assert repr(kernel.restarter).endswith("[STOPPED restarts=0/3]>")
            assert kernel.status == "DEAD" and kernel.restarts == 0
            assert not await kernel.manager.is_alive()
        assert not hub.kernels
        with pytest.raises(KernelHubError, match="only a RUNNING kernel"):
            await polite.restart()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_without_restarts_a_death_is_final():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=False)
        assert not kernel.restart_policy.enabled
        await kernel.manager.signal(signal.SIGTERM)
        await asyncio.wait_for(kernel.wait(), 60)
        assert rec.kinds(kernel.id) == ["starting", "ready", "died"]
        assert rec.of(kernel.id, "died")[0].data["exit_status"] == -signal.SIGTERM
        assert kernel.status == "DEAD" and not hub.kernels
        assert not Path(kernel.state["connection_file"]).exists()
        await kernel.shutdown()  # quiet no-op
        assert rec.kinds(kernel.id) == ["starting", "ready", "died"]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_shutdown_of_a_dead_kernel_waits_for_its_cleanup():
    # A slow cleanup (a remote nanny, tunnels) still running when the host calls shutdown():
    # shutdown() must not return before it is done.
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        manager = kernel.manager
        started, release, cleaned = asyncio.Event(), asyncio.Event(), []
        real_cleanup = manager.cleanup

        async def gated_cleanup() -> None:
            started.set()
            await release.wait()
            await real_cleanup()
            cleaned.append(True)

        manager.cleanup = gated_cleanup  # type: ignore[method-assign]
        await manager.signal(signal.SIGKILL)
        await asyncio.wait_for(started.wait(), 60)  # the restarter is cleaning up
        assert kernel.status == "DEAD"
        asyncio.get_running_loop().call_soon(release.set)
        await kernel.shutdown()  # not through wait_for: its extra loop turns would hide a bug
        assert cleaned == [True]
        assert not Path(kernel.state["connection_file"]).exists()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_manual_restart_relaunches_and_clients_follow():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=FAST)
        old = kernel.manager
        async with kernel.client() as client:
            await client.execute("x = 1", timeout=60)
            await kernel.restart()
            assert await old.wait() == 0  # it ended on the shutdown_request, politely
            assert kernel.manager is not old and kernel.status == "RUNNING"
            reply = await client.execute("x", timeout=60)
            assert reply.content["ename"] == "NameError"
            await kernel.restart(now=True)
            assert (await client.execute("1", timeout=60)).content["status"] == "ok"
        assert rec.kinds(kernel.id) == ["starting", "ready", *["restarting", "restarted"] * 2]
        assert rec.of(kernel.id, "restarted")[0].data == {"requested": True}
        assert kernel.restarts == 0  # manual restarts do not use up the policy
        assert kernel.restarter.watching
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
@pytest.mark.parametrize("encryption", ["disabled", "auto"])
async def test_the_first_output_after_each_restart_reaches_every_client(encryption):
    """The old process's last IOPub (its shutdown's status) must not count as the new one's.

    Each client waits for IOPub to deliver again after a restart; a straggler of the
    old process used to end that wait, and the first cell's output was then lost
    to a subscription the new process had not seen yet.
    """
    async with KernelHub(config={}, transport_encryption=encryption) as hub:
        kernel = await hub.launch(PYTHON, restart=False)
        blocking = await asyncio.to_thread(kernel.blocking_client)
        try:
            async with kernel.client() as client:
                for round_ in range(4):
                    await kernel.restart()
                    lines: list[str] = []
                    hook = lines.append
                    await client.execute(
                        f"print('back', {round_})",
                        output_hook=lambda m, hook=hook: hook(str(m.content.get("text", ""))),
                        timeout=60,
                    )
                    assert f"back {round_}" in "".join(lines), (round_, lines)
                    seen: list[str] = []
                    hook = seen.append
                    await asyncio.to_thread(
                        blocking.execute,
                        f"print('also', {round_})",
                        output_hook=lambda m, hook=hook: hook(str(m.content.get("text", ""))),
                        timeout=60,
                    )
                    assert f"also {round_}" in "".join(seen), (round_, seen)
        finally:
            await asyncio.to_thread(blocking.close)
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_restart_reaches_the_dead_kernels_grandchildren():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=FAST)
        async with kernel.client() as c:
            grandchild = await spawn_grandchild(c)
        os.kill(kernel.manager.pid, signal.SIGKILL)  # the leader only, not its group
        await rec.wait_for("restarted", kernel.id, timeout=60)
        assert await gone(grandchild)
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_execution_state_and_last_activity_follow_iopub(tmp_path):
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=FAST)
        # It may still be busy answering the readiness probes for a moment.
        assert kernel.execution_state in ("idle", "busy")
        await kernel.wait_for_execution_state("idle", timeout=60)
        before = kernel.last_activity
        flag = tmp_path / "go"
        code = f"import os, time\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.01)"
        async with kernel.client() as client:
            running = asyncio.ensure_future(client.execute(code, timeout=30))
            assert await kernel.wait_for_execution_state("busy", timeout=60) == "busy"
            assert kernel.last_activity > before
            flag.touch()
            await running
            await kernel.wait_for_execution_state("idle", timeout=60)
        assert "OPEN idle" in repr(kernel.monitor)
        await kernel.manager.signal(signal.SIGKILL)
        await kernel.wait_for_execution_state("dead", timeout=60)
        await rec.wait_for("restarted", kernel.id, timeout=60)
        await kernel.wait_for_execution_state("idle", timeout=60)
        await kernel.shutdown()
        assert kernel.execution_state == "dead"
        assert "CLOSED dead" in repr(kernel.monitor)


def test_restart_policy_resolution(plugin_manager):
    kt = KernelType(provider="x", name="y")

    class Policy:
        @staticmethod
        @hookimpl
        def restart_policy(hub, kernel_type):
            return RestartPolicy(enabled=False, limit=7) if kernel_type.provider == "x" else None

    plugin_manager.register(Policy, name="x")
    hub = KernelHub(plugin_manager=plugin_manager, config={})
    assert hub._restart_policy(kt, None, plugin="x") == RestartPolicy(enabled=False, limit=7)
    assert hub._restart_policy(kt, True, plugin="x") == RestartPolicy(limit=7)
    assert not (hub._restart_policy(kt, False, plugin="x")).enabled
    assert hub._restart_policy(kt, FAST, plugin="x") is FAST
    other = KernelType(provider="z", name="y")
    assert hub._restart_policy(other, None, plugin="z") == RestartPolicy()  # the core default


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_first_launch_that_fails_emits_failed_and_leaves_nothing():
    plugin = crash_looping_plugin()
    plugin.launches.append(0.0)  # pretend the good first launch happened: this one exits at once
    async with KernelHub(plugins=[plugin], config={}) as hub:
        rec = EventRecorder(hub)
        with pytest.raises(KernelHubError, match="exited during start-up"):
            await hub.launch("crashloop/k", kernel_id="doomed")
        assert rec.kinds("doomed") == ["starting", "failed"]
        assert "exit status 3" in rec.of("doomed", "failed")[0].data["reason"]
        assert not hub.kernels


@pytest.mark.integration
@pytest.mark.asyncio
async def test_shutdown_during_a_manual_restart_wins_and_leaves_nothing():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=FAST)
        restarting = asyncio.ensure_future(kernel.restart())
        await rec.wait_for("restarting", kernel.id)
        await kernel.shutdown()
        with pytest.raises(KernelHubError, match="shut down while it was restarting"):
            await restarting
        assert rec.kinds(kernel.id) == ["starting", "ready", "restarting", "shutdown"]
        assert kernel.status == "DEAD" and not hub.kernels
        assert not await kernel.manager.is_alive()
        runtime = Path(os.environ["JUPYTER_RUNTIME_DIR"])
        assert not list(runtime.glob(f"kernel-{kernel.id}*"))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_kernel_that_stayed_up_long_enough_gets_its_restarts_back():
    once = dict(limit=1, window=600, backoff_initial=0.05, backoff_max=0.05, jitter=0)
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        stable, fragile = await asyncio.gather(
            hub.launch(PYTHON, restart=RestartPolicy(**once, stable_after=0)),
            hub.launch(PYTHON, restart=RestartPolicy(**once, stable_after=600)),
        )
        for n in (1, 2):
            await stable.manager.signal(signal.SIGKILL)
            await fragile.manager.signal(signal.SIGKILL)
            await rec.wait_for("restarted", stable.id, count=n, timeout=60)
            await rec.wait_for("restarted" if n == 1 else "failed", fragile.id, timeout=60)
        assert stable.restarts == 2 and stable.status == "RUNNING"
        assert rec.kinds(fragile.id)[-3:] == ["restarted", "died", "failed"]
        assert "1 restarts within 600 s" in rec.of(fragile.id, "failed")[0].data["reason"]
        await stable.shutdown()


@pytest.mark.asyncio
async def test_died_carries_the_managers_exit_reason():
    """The restarter reports what the manager knows (the Slurm tests show it end to end)."""
    from kernel_hub import KernelManager, KernelType, LaunchRequest, RestartPolicy, RunningKernel
    from kernel_hub.lifecycle.starter import Started

    class Ended(KernelManager):
        def __init__(self, reason):
            self.reason = reason

        async def is_alive(self):
            return False

        async def wait(self):
            return 0

        async def signal(self, signum):
            pass

        async def kill(self):
            pass

        async def cleanup(self):
            pass

        def describe(self):
            return {}

        @property
        def exit_reason(self):
            return self.reason

    for reason, expected in (("Slurm job 7 reached its time limit", True), (None, False)):
        events, ended = [], asyncio.Event()
        kernel = RunningKernel(
            None,
            kernel_id="t",
            kernel_type=KernelType(provider="p", name="k"),
            request=LaunchRequest(kernel_id="t"),
            started=Started({}, {}, Ended(reason)),
            starter=None,  # restarts are off: never asked
            emit=lambda kind, events=events, **data: events.append((kind, data)),
            on_end=lambda _, ended=ended: ended.set(),
            restart_policy=RestartPolicy(enabled=False),
        )
        kernel.start_watching()
        await asyncio.wait_for(ended.wait(), 10)
        died = [data for kind, data in events if kind == "died"]
        assert died == [{"exit_status": 0, **({"reason": reason} if expected else {})}]


# ---- issue 21: a restart no client notices (same ports and key) ----


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_jupyter_client_from_the_connection_info_survives_kill_9_and_restart():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=FAST)
        before = dict(kernel.connection_info)
        foreign = ForeignClient(before)
        try:
            await foreign.start()
            assert await foreign.print_1() == ["1\n"]
            os.kill(kernel.manager.pid, signal.SIGKILL)
            await rec.wait_for("restarted", kernel.id, timeout=60)
            assert kernel.connection_info == before  # ports, ip, key, scheme: all the same
            # The same jupyter_client object: ZeroMQ reconnected it to the new process. Its
            # IOPub may reconnect a moment after its shell, as after any restart of a
            # jupyter_client kernel: like a frontend, it waits for IOPub before running code.
            await foreign.wait_for_iopub()
            assert await foreign.print_1() == ["1\n"]
            await kernel.restart()
            assert kernel.connection_info == before
            await foreign.wait_for_iopub()
            assert await foreign.print_1() == ["1\n"]
            await kernel.restart(now=True)
            await foreign.wait_for_iopub()
            assert await foreign.print_1() == ["1\n"]
        finally:
            await foreign.close()
        assert rec.of(kernel.id, "connection_changed") == []
        await kernel.shutdown()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_a_port_taken_before_the_relaunch_gives_new_ports_and_connection_changed():
    import json
    import socket

    slow = RestartPolicy(limit=3, window=60, backoff_initial=0.3, backoff_max=1, jitter=0)
    thief = socket.socket()
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernel = await hub.launch(PYTHON, restart=slow)
        before = dict(kernel.connection_info)
        path = Path(kernel.state["connection_file"])

        def steal(event) -> None:
            # Between the death and the relaunch (the backoff): another process's server.
            if event.kernel_id == kernel.id and event.kind == "died":
                thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                thief.bind((before["ip"], before["shell_port"]))
                thief.listen(1)

        hub.events.subscribe(steal)
        try:
            async with kernel.client() as client:
                await client.execute("x = 1", timeout=60)
                wire = client._wire
                os.kill(kernel.manager.pid, signal.SIGKILL)
                changed = await rec.wait_for("connection_changed", kernel.id, timeout=60)
                await rec.wait_for("restarted", kernel.id, timeout=60)
                after = kernel.connection_info
                assert after["shell_port"] != before["shell_port"]
                assert after["key"] == before["key"]  # new ports, the same key
                assert changed.data == {
                    "transport": "tcp",
                    "ip": after["ip"],
                    **{f"{c}_port": after[f"{c}_port"] for c in CHANNELS},
                    "key_changed": False,
                    "connection_file": str(path),
                }
                assert "key" not in changed.data
                # The connection file was rewritten with the new ports.
                assert json.loads(path.read_text())["shell_port"] == after["shell_port"]
                assert oct(path.stat().st_mode & 0o777) == "0o600"
                # kernel_hub's client followed, on a new wire client (issue 21 item 3).
                out = []
                reply = await client.execute("print(2)", output_hook=out.append, timeout=60)
                assert reply.content["status"] == "ok"
                assert [m.content["text"] for m in out if m.header["msg_type"] == "stream"] == [
                    "2\n"
                ]
                assert client._wire is not wire and client._wire.connected
                assert not wire.connected
            kinds = rec.kinds(kernel.id)
            assert kinds[kinds.index("died") :] == [
                "died",
                "restarting",
                "connection_changed",
                "restarted",
            ]
        finally:
            thief.close()
        await kernel.shutdown()


def open_fds() -> int:
    """Return how many file descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.asyncio
async def test_50_restarts_leave_no_fd_behind():
    async with KernelHub(config={}) as hub:
        kernel = await hub.launch(PYTHON, restart=FAST)
        before = dict(kernel.connection_info)
        async with kernel.client() as client:
            # One restart first: what is made once (the reaper, ZeroMQ's context and its I/O
            # thread) exists before the count.
            await kernel.restart(now=True)
            await client.execute("1", timeout=60)
            start = open_fds()
            for _ in range(50):
                await kernel.restart(now=True)
            assert (await client.execute("1", timeout=60)).content["status"] == "ok"
            grown = open_fds() - start
        assert kernel.connection_info == before
        await kernel.shutdown()
    # ZeroMQ closes a socket's file descriptors in its own reaper thread, a moment after
    # close(): those of the last restart's probe client may still be open at the count
    # (a few). A leak of one per restart would show as 50 or more.
    assert grown <= 8, f"{grown} more file descriptors after 50 restarts"
