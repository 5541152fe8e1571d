"""The hub as a host's registry: many kernels, shutdown_all, async with, events."""

from __future__ import annotations

import asyncio
import logging
import signal

import pytest

from kernel_hub import KernelHub, RestartPolicy
from kernel_hub.contract.events import EventBus, KernelEvent
from kernel_hub.testing import EventRecorder

PYTHON = "ipykernel/python3"
FAST = RestartPolicy(limit=3, window=60, backoff_initial=0.05, backoff_max=0.2, jitter=0.2)


def test_event_bus_logs_a_raising_subscriber_and_still_calls_the_others(caplog):
    bus = EventBus()
    seen = []

    def bad(event):
        raise RuntimeError("subscriber bug")

    bus.subscribe(bad)
    unsubscribe = bus.subscribe(seen.append)
    event = KernelEvent("died", "k1", "a/b", {"exit_status": -9})
    with caplog.at_level(logging.ERROR, logger="kernel_hub.events"):
        bus.emit(event)
    assert seen == [event]
    assert "event subscriber" in caplog.text and "subscriber bug" in caplog.text
    unsubscribe()
    bus.emit(event)
    assert seen == [event]
    assert event.describe() == "died a/b k1 exit_status=-9"
    with pytest.raises(ValueError, match="unknown event kind"):
        KernelEvent("exploded", "k1", "a/b")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.asyncio
async def test_eight_kernels_in_one_hub_shut_down_together():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        kernels = await asyncio.gather(*(hub.launch(PYTHON, restart=FAST) for _ in range(8)))
        assert len({k.id for k in kernels}) == 8
        assert dict(hub.kernels) == {k.id: k for k in kernels}
        assert all(hub.get(k.id) is k for k in kernels)
        assert len({k.manager.pid for k in kernels}) == 8
        assert f"kernels={len(kernels)}" in repr(hub)
        with pytest.raises(KeyError, match="no running kernel 'nope'"):
            hub.get("nope")

        async def check_one(kernel):
            async with kernel.client() as c:
                return (await c.execute("1+1", timeout=30)).content["status"]

        assert await asyncio.gather(*(check_one(k) for k in kernels)) == ["ok"] * 8

        # Concurrency, observed: when the first kernel reports its shutdown, no other is
        # still merely RUNNING — every shutdown had begun.
        at_first_shutdown: list[list[str]] = []

        def snapshot(event: KernelEvent) -> None:
            if event.kind == "shutdown" and not at_first_shutdown:
                at_first_shutdown.append([k.status for k in kernels])

        hub.events.subscribe(snapshot)
        await hub.shutdown_all()
        assert at_first_shutdown and "RUNNING" not in at_first_shutdown[0]
        assert not hub.kernels
        for k in kernels:
            assert k.status == "DEAD" and not await k.manager.is_alive()
            assert rec.kinds(k.id) == ["starting", "ready", "shutdown"]


@pytest.mark.integration
@pytest.mark.asyncio
async def test_async_with_shuts_down_everything_even_mid_restart():
    async with KernelHub(config={}) as hub:
        rec = EventRecorder(hub)
        slow = RestartPolicy(backoff_initial=30, backoff_max=30)  # restarting outlives the block
        steady = await hub.launch(PYTHON, restart=FAST)
        dying = await hub.launch(PYTHON, restart=slow)
        await dying.manager.signal(signal.SIGKILL)
        await rec.wait_for("restarting", dying.id)
        assert dying.status == "RESTARTING" and dying.id in hub.kernels
    assert not hub.kernels
    assert steady.status == dying.status == "DEAD"
    assert rec.kinds(dying.id) == ["starting", "ready", "died", "restarting", "shutdown"]
    assert not await steady.manager.is_alive()


@pytest.mark.integration
@pytest.mark.asyncio
async def test_events_are_in_order_per_kernel_and_a_raising_subscriber_stops_nobody(caplog):
    async with KernelHub(config={}) as hub:

        def bad(event):
            raise RuntimeError(f"cannot handle {event.kind}")

        hub.events.subscribe(bad)
        rec = EventRecorder(hub)
        a, b = await asyncio.gather(
            hub.launch(PYTHON, restart=FAST), hub.launch(PYTHON, restart=FAST)
        )
        await a.manager.signal(signal.SIGKILL)
        await b.manager.signal(signal.SIGKILL)
        await rec.wait_for("restarted", a.id, timeout=60)
        await rec.wait_for("restarted", b.id, timeout=60)
        await a.restart()
        await hub.shutdown_all()
    lifecycle = ["starting", "ready", "died", "restarting", "restarted"]
    assert rec.kinds(a.id) == [*lifecycle, "restarting", "restarted", "shutdown"]
    assert rec.kinds(b.id) == [*lifecycle, "shutdown"]
    times = [e.time for e in rec.events]
    assert times == sorted(times)
    assert caplog.text.count("cannot handle") >= len(rec.events)


@pytest.mark.integration
@pytest.mark.asyncio
async def test_an_attached_kernel_is_watched_but_not_relaunched():
    async with KernelHub(config={}) as owner, KernelHub(config={}) as other:
        kernel = await owner.launch(PYTHON, restart=False)
        rec = EventRecorder(other)
        saved = kernel.describe()
        again = await other.attach(saved["type_id"], saved["connection_info"], saved["state"])
        assert other.get(again.id) is again and not again.restart_policy.enabled
        await again.wait_for_execution_state("idle", timeout=60)
        await kernel.manager.signal(signal.SIGKILL)
        await asyncio.wait_for(again.wait(), 60)
        assert rec.kinds(again.id) == ["died"]
        assert not other.kernels and again.execution_state == "dead"
