"""Test kit for kernel_hub and its plugins: an opt-in pytest plugin.

Enable it in a ``conftest.py`` with ``pytest_plugins = ["kernel_hub.testing"]``.

Fixtures:

- ``plugin_manager``: a fresh plugin manager without entry points.
- ``scripted_transport``: a :class:`ScriptedTransport` factory; it replays a
  scripted kernel's replies to an :class:`~kernel_hub.AsyncKernelClient`, so
  client logic is tested without a kernel process.
- ``fake_kernel``: a :class:`FakeKernel` answering like ipykernel would.

Helpers: :class:`EventRecorder` records a hub's lifecycle events and awaits
them; :func:`require_service` skips a test whose service (dockerd, sshd) is
missing on a developer's machine but fails it in CI (``CI=true``);
:func:`processes_with_env` finds the processes a run left behind;
:func:`spawn_grandchild` has a kernel start a process of its own;
:class:`ProviderConformance` is the conformance suite for provider plugins (see
:mod:`kernel_hub.conformance` and ``docs/writing-a-plugin.md``), with
:func:`execute_output` and :func:`interrupt_busy_loop`, its execute and interrupt
checks, for a provider's own tests too; and
:func:`start_nanny`, which runs ``python - < nanny.py`` as a remote provider
would and returns a :class:`NannyProcess` whose ``stop()`` leaves nothing behind.

Enabling the plugin also registers the markers the suite uses
(``integration``, ``slow``, ``docker``, ``ssh``), so ``--strict-markers`` works.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

import pytest

from .conformance import ProviderConformance, execute_output, interrupt_busy_loop
from .connection import new_connection_info
from .plugins import KernelHubPluginManager, make_plugin_manager
from .session import Message, Session

if TYPE_CHECKING:
    from .client import AsyncKernelClient
    from .events import KernelEvent
    from .hub import KernelHub

__all__ = [
    "EventRecorder",
    "FakeKernel",
    "ProviderConformance",
    "NannyProcess",
    "ScriptedTransport",
    "execute_output",
    "fake_kernel",
    "interrupt_busy_loop",
    "plugin_manager",
    "processes_with_env",
    "require_service",
    "scripted_transport",
    "spawn_grandchild",
    "start_nanny",
]

#: The markers kernel_hub's tests and the conformance suite use.
MARKERS = {
    "integration": "starts a real ipykernel process",
    "slow": "takes more than a few seconds",
    "docker": "needs a real Docker engine",
    "ssh": "needs a real sshd on loopback",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register :data:`MARKERS`, so that projects using the kit need not."""
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


#: Gets each request the client sent; returns the ``(channel, message)`` pairs to deliver.
Responder = Callable[[str, Message], Iterable[tuple[str, Message]]]


class ScriptedTransport:
    """A fake transport: requests go to a *responder*, its answers come back on the loop.

    :param session: the kernel side's session (same key as the client's).
    :param responder: called with ``(channel, request)``; returns the messages to deliver.
    """

    def __init__(self, session: Session, responder: Responder) -> None:
        self.session = session
        self.responder = responder
        self.sent: list[tuple[str, Message]] = []
        self._on_message: Callable[[str, list[bytes]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<ScriptedTransport sent={len(self.sent)}>"

    def open(self, on_message: Callable[[str, list[bytes]], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message

    def send(self, channel: str, frames: list[bytes]) -> None:
        request = self.session.deserialize(frames)
        self.sent.append((channel, request))
        for out_channel, msg in self.responder(channel, request):
            self.deliver_frames(out_channel, self.session.serialize(msg))

    def deliver(self, channel: str, msg: Message) -> None:
        """Deliver *msg* to the client as if the kernel sent it on *channel*."""
        self.deliver_frames(channel, self.session.serialize(msg))

    def deliver_frames(self, channel: str, frames: list[bytes]) -> None:
        """Deliver raw *frames* (e.g. with a forged signature) on *channel*."""
        assert self._loop is not None, "transport not opened"
        self._loop.call_soon(self._dispatch, channel, list(frames))

    def _dispatch(self, channel: str, frames: list[bytes]) -> None:
        if self._on_message is not None:
            self._on_message(channel, frames)

    def close(self) -> None:
        self._on_message = None


class FakeKernel:
    """A scripted kernel answering like ipykernel: status busy/idle, replies, streams.

    ``execute`` of ``print(x)`` publishes a stream ``x``; code containing
    ``raise`` replies with an error; code ``input(p)`` asks for input.
    """

    def __init__(self) -> None:
        self.connection_info = new_connection_info()
        self.session = Session(self.connection_info["key"])
        self.execution_count = 0

    def transport(self) -> ScriptedTransport:
        return ScriptedTransport(self.session, self.respond)

    def client(self, **kwargs: Any) -> Any:
        from .client import AsyncKernelClient

        return AsyncKernelClient(self.connection_info, transport=self.transport(), **kwargs)

    def _status(self, state: str, parent: Message) -> tuple[str, Message]:
        return ("iopub", self.session.msg("status", {"execution_state": state}, parent=parent))

    def respond(self, channel: str, req: Message) -> Iterator[tuple[str, Message]]:
        msg_type = req.header["msg_type"]
        s = self.session
        if msg_type == "input_reply":
            yield ("iopub", s.msg("stream", {"name": "stdout", "text": req.content["value"]}))
            return
        reply_type = msg_type.replace("_request", "_reply")
        yield self._status("busy", req)
        if msg_type == "execute_request":
            self.execution_count += 1
            code = req.content["code"]
            yield ("iopub", s.msg("execute_input", {"code": code}, parent=req))
            if code.startswith("print(") and code.endswith(")"):
                text = code[6:-1] + "\n"
                yield ("iopub", s.msg("stream", {"name": "stdout", "text": text}, parent=req))
            if "raise" in code:
                err = {
                    "ename": "RuntimeError",
                    "evalue": "boom",
                    "traceback": ["RuntimeError: boom"],
                }
                yield ("iopub", s.msg("error", err, parent=req))
                yield (channel, s.msg(reply_type, {"status": "error", **err}, parent=req))
            elif code.startswith("input("):
                prompt = {"prompt": code[6:-1], "password": False}
                yield ("stdin", s.msg("input_request", prompt, parent=req))
                yield (channel, s.msg(reply_type, {"status": "ok"}, parent=req))
            else:
                content = {"status": "ok", "execution_count": self.execution_count}
                yield (channel, s.msg(reply_type, content, parent=req))
        elif msg_type == "kernel_info_request":
            info = {"status": "ok", "protocol_version": "5.3", "implementation": "fake"}
            yield (channel, s.msg(reply_type, info, parent=req))
        else:
            yield (channel, s.msg(reply_type, {"status": "ok"}, parent=req))
        yield self._status("idle", req)


class EventRecorder:
    """Record every event of *hub* and wait for particular ones (tests of hosts and plugins).

    :param hub: the hub to subscribe to; :meth:`close` unsubscribes.
    """

    def __init__(self, hub: KernelHub) -> None:
        self.events: list[KernelEvent] = []
        self._waiters: list[tuple[str, str | None, int, asyncio.Future[KernelEvent]]] = []
        self._unsubscribe = hub.events.subscribe(self._on_event)

    def __repr__(self) -> str:
        return f"<EventRecorder events={len(self.events)}>"

    def close(self) -> None:
        """Stop recording."""
        self._unsubscribe()

    def of(self, kernel_id: str | None = None, kind: str | None = None) -> list[KernelEvent]:
        """Return the recorded events, of one kernel and/or one kind."""
        return [
            e
            for e in self.events
            if (kernel_id is None or e.kernel_id == kernel_id) and (kind is None or e.kind == kind)
        ]

    def kinds(self, kernel_id: str | None = None) -> list[str]:
        """Return the kinds of the recorded events (of one kernel), in order."""
        return [e.kind for e in self.of(kernel_id)]

    def _on_event(self, event: KernelEvent) -> None:
        self.events.append(event)
        for kind, kernel_id, count, fut in self._waiters:
            if not fut.done() and len(self.of(kernel_id, kind)) >= count:
                fut.set_result(self.of(kernel_id, kind)[count - 1])

    async def wait_for(
        self, kind: str, kernel_id: str | None = None, *, count: int = 1, timeout: float = 30.0
    ) -> KernelEvent:
        """Return the *count*-th event of *kind* (of *kernel_id*), waiting for it if needed.

        :raises TimeoutError: naming the events seen, after *timeout* seconds.
        """
        seen = self.of(kernel_id, kind)
        if len(seen) >= count:
            return seen[count - 1]
        fut: asyncio.Future[KernelEvent] = asyncio.get_running_loop().create_future()
        entry = (kind, kernel_id, count, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise TimeoutError(
                f"no {kind!r} event #{count} within {timeout} s; seen: {self.kinds(kernel_id)}"
            ) from None
        finally:
            self._waiters.remove(entry)


def require_service(name: str, available: bool, how: str) -> None:
    """Skip when service *name* is unavailable on a developer's machine; fail in CI.

    :param how: how to start the service, shown in the message.
    """
    if available:
        return
    msg = f"{name} is not available: {how}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{msg} (CI=true: tests of real services must run in CI)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def plugin_manager() -> KernelHubPluginManager:
    """A fresh plugin manager with the core defaults and no entry-point plugins."""
    return make_plugin_manager(load_entrypoints=False)


@pytest.fixture
def fake_kernel() -> FakeKernel:
    """A scripted kernel; ``fake_kernel.client()`` returns a client wired to it."""
    return FakeKernel()


@pytest.fixture
def scripted_transport() -> Callable[[Session, Responder], ScriptedTransport]:
    """A factory of :class:`ScriptedTransport` objects."""
    return ScriptedTransport


# ---- nanny ----


class NannyProcess:
    """A nanny started by :func:`start_nanny`; :meth:`stop` leaves nothing behind.

    :param proc: the process started (for ``--daemon``, the parent that exited).
    :param handshake: the nanny's handshake line, decoded.
    """

    def __init__(self, proc: subprocess.Popen[bytes], handshake: dict[str, Any]) -> None:
        self.proc = proc
        self.handshake = handshake
        self.connection_info: dict[str, Any] = handshake["connection_info"]
        self.nanny_pid: int = handshake["nanny_pid"]
        self.workdir: str = handshake["workdir"]
        #: Every kernel pid seen; a test that restarts the kernel appends the new one.
        self.kernel_pids: list[int] = [handshake["kernel_pid"]]

    def __repr__(self) -> str:
        return f"<NannyProcess pid={self.nanny_pid} kernel={self.kernel_pids[-1]}>"

    @property
    def kernel_pid(self) -> int:
        return self.kernel_pids[-1]

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the nanny (it kills its kernel), SIGKILL what is left, remove its work dir."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.nanny_pid, signal.SIGTERM)
        if self.proc.pid == self.nanny_pid:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:  # --daemon: not our child; wait for it to go away
            if not wait_pid_gone(self.nanny_pid, timeout):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.nanny_pid, signal.SIGKILL)
            self.proc.wait()
        for pid in self.kernel_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Return whether *pid* runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


#: Run in a kernel: starts a sleeping child process of the kernel's own and prints its pid.
_SPAWN_GRANDCHILD = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(p.pid)"
)


async def spawn_grandchild(client: AsyncKernelClient, *, timeout: float = 10.0) -> int:
    """Have the kernel start a sleeping child process of its own; return that child's pid.

    For tests that a kernel's end (shutdown, kill, restart) reaches what it started.

    :param timeout: seconds for the execute request.
    """
    _, printed = await execute_output(client, _SPAWN_GRANDCHILD, timeout=timeout)
    return int(printed)


def processes_with_env(entry: str) -> list[int]:
    """Return the live processes (zombies excepted) whose environment holds *entry*.

    What a leak check looks for: every process a test run started carries a
    variable it set (``JPY_PARENT_PID=<pid>``, ``JUPYTER_RUNTIME_DIR=<dir>``),
    whoever its parent is by now. This process itself is never returned.

    :param entry: one ``NAME=value`` item, matched exactly.
    """
    me, needle, found = os.getpid(), entry.encode(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue  # ended while we looked, or not ours to read
        if needle in env and pid_alive(int(name)):
            found.append(int(name))
    return found


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait up to *timeout* s for *pid* to end (woken by a pidfd); return whether it did."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(pidfd, selectors.EVENT_READ)
            sel.select(timeout)  # readable once the process has exited
        return not pid_alive(pid)
    finally:
        os.close(pidfd)


def start_nanny(
    *args: str,
    python: str = sys.executable,
    stderr: int | IO[bytes] | None = None,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> NannyProcess:
    """Run ``python - *args < nanny.py`` as a remote provider would; return after the handshake.

    :param stderr: where the nanny's log goes (default: inherited).
    :raises RuntimeError: when the nanny answers with an error or no handshake in time.
    """
    from .nanny import __file__ as nanny_file

    with open(nanny_file, "rb") as src:
        proc = subprocess.Popen(
            [python, "-", *args],
            stdin=src,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=None if env is None else dict(env),
            start_new_session=True,  # like over SSH: no terminal signals from the test run
        )
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout)
    line = proc.stdout.readline() if ready else b""
    proc.stdout.close()
    try:
        handshake = json.loads(line)
    except ValueError:
        handshake = {"error": f"no handshake within {timeout} s (got {line!r})"}
    if "error" in handshake:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        raise RuntimeError(f"the nanny failed: {handshake['error']}")
    return NannyProcess(proc, handshake)
