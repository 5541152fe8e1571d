"""One-call conveniences: start a kernel, hand over a client, shut everything down."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .aio.loopthread import LoopThread
from .client import BlockingKernelClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from .lifecycle.kernel_client import KernelClient

__all__ = ["run_kernel", "run_kernel_async"]


@contextlib.asynccontextmanager
async def run_kernel_async(
    type_id: str | None = None, **launch_kwargs: Any
) -> AsyncIterator[KernelClient]:
    """Launch *type_id* (default: this Python's kernel) and yield a connected async client.

    The kernel and the hub are shut down when the block exits.

    .. code-block:: python

        async with run_kernel_async() as client:
            await client.execute("x = 1")
    """
    from .hub import KernelHub

    async with KernelHub() as hub:
        kernel = await hub.launch(type_id, **launch_kwargs)
        try:
            async with kernel.client() as client:
                yield client
        finally:
            await kernel.shutdown()


@contextlib.contextmanager
def run_kernel(type_id: str | None = None, **launch_kwargs: Any) -> Iterator[BlockingKernelClient]:
    """Launch *type_id* (default: this Python's kernel) and yield a blocking client.

    Works in plain scripts and inside a running event loop (a notebook) alike:
    everything runs on kernel_hub's private loop thread.

    .. code-block:: python

        with run_kernel() as client:
            client.execute_interactive("print(6*7)")
    """
    runner = LoopThread.get()
    cm = run_kernel_async(type_id, **launch_kwargs)
    async_client = runner.run(cm.__aenter__())
    client = BlockingKernelClient(async_client=async_client)  # connected already: no-op
    try:
        yield client
    except BaseException as exc:
        if not runner.run(cm.__aexit__(type(exc), exc, exc.__traceback__)):
            raise
    else:
        runner.run(cm.__aexit__(None, None, None))
