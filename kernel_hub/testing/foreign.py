"""ForeignClient: a jupyter_client client on a kernel's connection info, as a program holds it.

It checks what issue 21 promises: a client made from the connection info before
a restart reaches the relaunched kernel without being told. It needs
``jupyter_client`` (in kernel_hub's ``dev`` group), imported when it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["ForeignClient"]

T = TypeVar("T")


class ForeignClient:
    """A jupyter_client ``BlockingKernelClient`` on connection info, driven from one thread.

    jupyter_client's blocking client makes an event loop in the thread that uses it;
    one worker thread keeps that to one loop, closed with the client by :meth:`close`.

    :param info: the connection info (a copy is kept: later changes do not reach it).
    """

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.info = dict(info)
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.kc: Any = None

    def __repr__(self) -> str:
        state = "STARTED" if self.kc is not None else "NEW"
        return f"<ForeignClient [{state} shell={self.info.get('shell_port')}]>"

    async def call(self, fn: Callable[[], T]) -> T:
        """Run *fn* on the client's thread."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def start(self) -> None:
        """Load the connection info, start the channels, and wait until IOPub delivers.

        A SUB socket misses what is published before its subscription reaches the
        kernel: the first ``print(1)`` of a client that did not wait lost its output
        now and then (a CI failure). A frontend waits so before running code.
        """

        def start() -> None:
            from jupyter_client.blocking.client import BlockingKernelClient as JupyterClient

            self.kc = JupyterClient()
            self.kc.load_connection_info(self.info)
            self.kc.start_channels()

        await self.call(start)
        await self.wait_for_iopub()

    async def wait_for_iopub(self, *, timeout: float = 60) -> None:
        """Send ``kernel_info`` requests until IOPub carries the status of one of them.

        After a relaunch behind a port proxy (Docker's, an SSH tunnel) ZeroMQ may
        reconnect IOPub a moment after shell, and output sent meanwhile is lost:
        a client that (re)joins waits so. Unlike jupyter_client's
        ``wait_for_ready``, a message left over from before does not count.
        """

        def wait() -> None:
            from queue import Empty

            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg_id = self.kc.kernel_info()
                probe_end = time.monotonic() + 0.5  # one probe's wait, not a synchronisation
                while time.monotonic() < probe_end:
                    try:
                        msg = self.kc.get_iopub_msg(timeout=max(probe_end - time.monotonic(), 0))
                    except Empty:
                        break
                    if msg["parent_header"].get("msg_id") == msg_id:
                        self._drain()
                        return
            raise TimeoutError(f"{self!r}: IOPub did not come back within {timeout} s")

        await self.call(wait)

    def _drain(self) -> None:
        """Drop what is queued on shell and IOPub now (the probes' replies and statuses)."""
        from queue import Empty

        for get in (self.kc.get_shell_msg, self.kc.get_iopub_msg):
            while True:
                try:
                    get(timeout=0.2)
                except Empty:
                    break

    async def print_1(self, *, timeout: float = 60) -> list[str]:
        """Execute ``print(1)``; return the stream texts (``["1\\n"]`` when all is well)."""

        def run() -> list[str]:
            out: list[str] = []

            def hook(msg: dict[str, Any]) -> None:
                if msg["header"]["msg_type"] == "stream":
                    out.append(msg["content"]["text"])

            reply = self.kc.execute_interactive("print(1)", output_hook=hook, timeout=timeout)
            if reply["content"]["status"] != "ok":
                raise AssertionError(f"print(1) failed: {reply['content']!r}")
            return out

        return await self.call(run)

    async def close(self) -> None:
        """Stop the channels, close the thread's event loop and the thread."""

        def stop() -> None:
            if self.kc is not None:
                self.kc.stop_channels()
            with contextlib.suppress(RuntimeError):
                asyncio.get_event_loop_policy().get_event_loop().close()
            asyncio.set_event_loop(None)

        await self.call(stop)
        self.pool.shutdown()
