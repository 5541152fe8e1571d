"""kernel_hub.aio: stopping a task never eats the caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from kernel_hub.aio import cancel_and_wait

pytestmark = pytest.mark.asyncio


async def _slow_to_stop(stopping: asyncio.Event, release: asyncio.Event) -> None:
    """A task that, once cancelled, still needs a moment (like closing a connection)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        stopping.set()
        await release.wait()
        raise


async def _stopping() -> tuple[asyncio.Task[None], asyncio.Future[None], asyncio.Event]:
    """Start cancel_and_wait on a slow task; return once the task is busy stopping."""
    stopping, release = asyncio.Event(), asyncio.Event()
    task = asyncio.ensure_future(_slow_to_stop(stopping, release))
    await asyncio.sleep(0)
    stopper = asyncio.ensure_future(cancel_and_wait(task))
    await asyncio.wait_for(stopping.wait(), 5)
    return task, stopper, release


async def test_cancel_and_wait_ends_the_task_and_returns():
    task, stopper, release = await _stopping()
    assert not stopper.done()  # it waits for the task's end, not just for the cancel
    release.set()
    await asyncio.wait_for(stopper, 5)
    assert task.cancelled()


async def test_a_cancel_of_the_caller_meanwhile_propagates():
    task, stopper, release = await _stopping()
    stopper.cancel()  # whoever called cancel_and_wait is cancelled itself
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stopper, 5)
    assert stopper.cancelled()  # with suppress(CancelledError) it returned None instead
    assert task.cancelled()


async def test_the_task_s_own_error_is_raised():
    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.ensure_future(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)


async def test_an_ended_or_unstarted_task_is_fine():
    ended = asyncio.ensure_future(asyncio.sleep(0))
    await ended
    await cancel_and_wait(ended)
    unstarted = asyncio.ensure_future(asyncio.sleep(10))
    await cancel_and_wait(unstarted)
    assert unstarted.cancelled()
