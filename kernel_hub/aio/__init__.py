"""Small asyncio helpers that keep cancellation honest, for the core and for plugins.

Python 3.11's ``asyncio.wait_for`` hands back the result when the awaited
future and a cancel of the caller meet in one loop turn, and the cancel is
lost. Code that waits in a loop (``manager.wait()`` across reconnects, say)
then loops on, and whoever cancelled it waits forever. kernel_hub's runtime
code therefore uses ``async with asyncio.timeout(...)`` for timeouts, and
:func:`cancel_and_wait` to stop a task of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["being_cancelled", "cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel *task* and return once it has ended.

    Unlike ``with suppress(CancelledError): await task``, a cancel of the
    *caller* that arrives meanwhile still propagates: only the task's own
    cancellation is absorbed. An exception the task ended with is raised.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if being_cancelled():
            raise


def being_cancelled() -> bool:
    """Return whether someone asked to cancel the running task.

    In an ``except CancelledError`` this tells a cancel of our own caller
    (to be passed on) from the end of a task we awaited.
    """
    me = asyncio.current_task()
    return me is not None and me.cancelling() > 0
