"""DockerManager: watch and control a kernel's container through the engine.

``wait()`` is woken by the engine: one daemon thread per manager blocks on
the engine's event stream for the container's ``die`` event and hands the
exit status to every waiting coroutine, on whatever event loop it waits.
Signals go to the container's PID 1, which is Docker's init (tini) by
default: it forwards them to the kernel, so SIGINT interrupts ipykernel as it
would a local process.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal as _signal
import threading
import time
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import KernelManager

from .engine import EngineUnavailable, engine_errors, get_client

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DockerManager", "exit_status_of"]


def exit_status_of(code: int | None) -> int | None:
    """Map a container exit code to the manager convention (negative = killed by signal N).

    Docker reports a process killed by signal N as ``128 + N`` (137 for SIGKILL).
    """
    if code is not None and 128 < code < 128 + 65:
        return -(code - 128)
    return code


class _ExitWatcher:
    """One thread blocked in the engine's wait call; fans the result out to every loop."""

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id
        self.done = threading.Event()
        self.status: int | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[int | None]]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name=f"kernel-hub-docker-wait-{container_id[:12]}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        from docker.errors import NotFound

        while True:
            try:
                self._finish(self._watch_once())
                return
            except NotFound:
                self._finish(None)  # removed: it has ended, its status is gone
                return
            except Exception:  # noqa: BLE001 - engine hiccup: ask again, gently
                time.sleep(1.0)

    def _watch_once(self) -> int | None:
        """Block until the container dies; return its exit status.

        The engine's event stream reports ``die`` as soon as the process ends,
        several hundred milliseconds before ``/wait`` returns (which also waits
        for the network teardown). The engine subscribes a moment after it
        answers, so recent events are replayed (a minute back: a remote engine's
        clock may be off; a container dies only once, so any ``die`` is the one)
        and the state is checked once subscribed: an exit at any moment is seen.
        """
        api = get_client().api
        stream = api.events(
            since=int(time.time()) - 60,
            filters={"container": self.container_id, "type": "container", "event": ["die"]},
            decode=True,
        )
        try:
            state = api.inspect_container(self.container_id)["State"]
            if state.get("Status") in ("exited", "dead"):
                return exit_status_of(state.get("ExitCode"))
            for event in stream:
                if event.get("Action", event.get("status")) == "die":
                    code = (event.get("Actor") or {}).get("Attributes", {}).get("exitCode")
                    return exit_status_of(int(code)) if code is not None else None
            raise ConnectionError("the engine closed its event stream")
        finally:
            stream.close()

    def _finish(self, status: int | None) -> None:
        with self._lock:
            self.status = status
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, fut, status)

    async def wait(self) -> int | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int | None] = loop.create_future()
        with self._lock:
            if self.done.is_set():
                return self.status
            self._waiters.append((loop, fut))
        try:
            return await fut
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, fut))


def _resolve(fut: asyncio.Future[int | None], status: int | None) -> None:
    if not fut.done():
        fut.set_result(status)


class DockerManager(KernelManager):
    """Manage the container of one kernel.

    :param container_id: the container's id.
    :param temp_dir: the host directory holding the connection file; removed by :meth:`cleanup`.
    :param container_name: for reprs and messages.
    :param kernel_id: the hub's id of the kernel.
    :param image: the image the container runs.
    """

    def __init__(
        self,
        container_id: str,
        *,
        temp_dir: str | None = None,
        container_name: str = "",
        kernel_id: str = "",
        image: str = "",
        type_id: str = "",
    ) -> None:
        self.container_id = container_id
        self.temp_dir = temp_dir
        self.container_name = container_name
        self.kernel_id = kernel_id
        self.image = image
        self.type_id = type_id
        self._watcher: _ExitWatcher | None = None
        self._watcher_lock = threading.Lock()
        self._removed = False

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, type_id: str = "") -> DockerManager:
        """Rebuild a manager from :meth:`describe` output or a launch state."""
        cid = state.get("container_id")
        if not isinstance(cid, str) or not cid:
            raise ValueError(f"docker kernel state has no 'container_id': {dict(state)!r}")
        return cls(
            cid,
            temp_dir=state.get("temp_dir"),
            container_name=state.get("container_name", ""),
            kernel_id=state.get("kernel_id", ""),
            image=state.get("image", ""),
            type_id=type_id,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "container_id": self.container_id,
            "container_name": self.container_name,
            "image": self.image,
            "temp_dir": self.temp_dir,
            "kernel_id": self.kernel_id,
        }

    def __repr__(self) -> str:
        watcher = self._watcher
        if self._removed:
            status = "REMOVED"
        elif watcher is not None and watcher.done.is_set():
            status = f"DEAD exit={watcher.status}"
        else:
            status = "RUNNING"
        return f"<DockerManager {self.type_id or '?'} [{status} id={self.container_id[:12]}]>"

    def _ensure_watcher(self) -> _ExitWatcher:
        with self._watcher_lock:
            if self._watcher is None:
                self._watcher = _ExitWatcher(self.container_id)
            return self._watcher

    @property
    def exit_status(self) -> int | None:
        watcher = self._watcher
        return watcher.status if watcher is not None and watcher.done.is_set() else None

    def _inspect_state(self) -> dict[str, Any] | None:
        from docker.errors import NotFound

        try:
            with engine_errors():
                return dict(get_client().api.inspect_container(self.container_id)["State"])
        except NotFound:
            return None

    async def is_alive(self) -> bool:
        watcher = self._watcher
        if self._removed or (watcher is not None and watcher.done.is_set()):
            return False
        state = await asyncio.to_thread(self._inspect_state)
        return bool(state and state.get("Running"))

    async def wait(self) -> int | None:
        if self._removed and self._watcher is None:
            return None
        return await self._ensure_watcher().wait()

    async def cpu_seconds(self) -> float | None:
        """CPU seconds the container has used (the engine's stats, one sample, no wait)."""
        from docker.errors import APIError

        def read() -> float | None:
            try:
                with engine_errors():
                    stats = get_client().api.stats(self.container_id, stream=False, one_shot=True)
            except (APIError, EngineUnavailable):
                return None  # gone, or the engine is: the culler goes by messages alone
            usage = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
            total = usage.get("total_usage")
            return total / 1e9 if isinstance(total, int) and total > 0 else None

        if self._removed:
            return None
        return await asyncio.to_thread(read)

    async def signal(self, signum: int) -> None:
        from docker.errors import APIError

        def send() -> None:
            # 404: removed; 409: not running. Both mean "already gone", which is not an error.
            with engine_errors(), contextlib.suppress(APIError):
                get_client().api.kill(self.container_id, signal=int(signum))

        if not self._removed:
            await asyncio.to_thread(send)

    async def interrupt(self) -> None:
        """Send SIGINT to PID 1: Docker's init forwards it; a kernel that is PID 1 handles it."""
        await self.signal(_signal.SIGINT)

    async def kill(self) -> None:
        await self.signal(_signal.SIGKILL)
        if not self._removed:
            await self.wait()

    async def cleanup(self) -> None:
        """Remove the container (forcibly, so none outlives its kernel) and the temp dir."""
        from docker.errors import APIError, NotFound

        def remove() -> None:
            # One thread does both: if the awaiting task is cancelled (a loop shutting down),
            # the thread still finishes, and the temp dir does not outlive the container.
            if not self._removed:
                api = get_client().api
                with engine_errors():
                    try:
                        api.remove_container(self.container_id, force=True)
                    except NotFound:
                        pass
                    except APIError as exc:
                        if exc.status_code != 409:  # 409: another caller is removing it now
                            raise
                        with contextlib.suppress(NotFound):
                            api.wait(self.container_id, condition="removed", timeout=60)
                self._removed = True
            if self.temp_dir:
                shutil.rmtree(self.temp_dir, ignore_errors=True)

        await asyncio.to_thread(remove)

    async def last_output(self, lines: int = 20) -> str:
        """Return the container's last *lines* log lines (the kernel's own stdout/stderr)."""
        from docker.errors import APIError

        def logs() -> str:
            with engine_errors(), contextlib.suppress(APIError):
                raw = get_client().api.logs(self.container_id, tail=lines)
                return raw.decode(errors="replace").rstrip()
            return ""

        if self._removed:
            return ""
        return await asyncio.to_thread(logs)
