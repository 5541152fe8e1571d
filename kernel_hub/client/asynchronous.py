"""AsyncKernelClient: the asyncio-native way to talk to a kernel."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any

from ..aio import cancel_and_wait
from ..contract.errors import KernelDied, KernelHubError
from ..wire.droplog import DropLog
from ..wire.session import BadSignature, Message, Session
from ..wire.transport import Transport, ZMQTransport
from ._execution import (
    IDLE_GRACE,
    OUTPUT_BACKLOG,
    Execution,
    Handler,
    OutputHook,
    StdinHook,
    expire,
)
from ._requests import KernelRequests
from .console import console_output_hook, terminal_input

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from ..contract.manager import KernelManager

__all__ = ["AsyncKernelClient"]

log = logging.getLogger("kernel_hub.client")

CHANNELS = ("shell", "control", "stdin", "iopub")

# Kinds of drops, as the client's DropLog counts and logs them.
_BAD_SIGNATURE = "dropped messages with a bad signature"
_MALFORMED = "dropped malformed messages"
_STRAY = "dropped replies to no request of this client"

#: How long a kernel that greets IOPub subscribers (``iopub_welcome``) is given to
#: greet before readiness falls back to nudging it with ``kernel_info_request``. Short:
#: ipykernel 7.4 greets only a topic new to it, so a second subscriber to the same
#: topic (``""``, every client's) gets no welcome of its own.
WELCOME_WAIT = 0.5


class AsyncKernelClient(KernelRequests):
    """Talk to one kernel over its channels, from asyncio.

    Requests return the reply :class:`~kernel_hub.wire.session.Message`. Create one
    from a running kernel (``kernel.client()``) or from connection info, then
    use it as ``async with client:`` (or call :meth:`connect` and :meth:`close`).
    Every client method must be awaited on the loop that connected it.

    :param connection_info: the kernel's connection info (ports, ip, key).
    :param manager: the kernel's manager; needed for signal interrupts, to fail
        waiting requests when the kernel dies, and for ``shutdown`` to make sure
        the kernel has ended. A client never builds one: ask the hub
        (:meth:`KernelHub.manager_for`, or use ``kernel.client()``).
    :param interrupt_mode: ``"signal"`` or ``"message"``, from the kernel type.
    :param transport: the wire; a :class:`ZMQTransport` by default (tests pass a fake).
    :param ready_timeout: how long ``async with client:`` waits in :meth:`wait_for_ready`.

    It is a plain connection to one endpoint, bound to one process when given
    its *manager*: when that process dies, the requests waiting for it fail
    with :class:`~kernel_hub.KernelDied`, and so does every later one. A kernel
    that a restart brings back on the same ports and key is reached again by
    the same sockets (ZeroMQ reconnects them). ``kernel.client()`` gives a
    :class:`~kernel_hub.KernelClient` instead, which follows its kernel across
    restarts.
    """

    def __init__(
        self,
        connection_info: Mapping[str, Any],
        *,
        manager: KernelManager | None = None,
        interrupt_mode: str = "signal",
        transport: Transport | None = None,
        session: Session | None = None,
        ready_timeout: float | None = 60.0,
    ) -> None:
        self.connection_info = dict(connection_info)
        #: How long ``async with client:`` waits for the kernel to answer.
        self.ready_timeout = ready_timeout
        self.manager = manager
        self.interrupt_mode = interrupt_mode
        self.session = session or Session(
            self.connection_info.get("key", ""),
            self.connection_info.get("signature_scheme", "hmac-sha256"),
        )
        self._transport = transport or ZMQTransport(
            self.connection_info, identity=self.session.session_id.encode()
        )
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._executions: dict[str, Execution] = {}
        # Requests whose replies nobody waits for (readiness nudges): not counted as strays.
        self._nudges: set[str] = set()
        self._handlers: dict[str, list[Handler]] = {c: [] for c in CHANNELS}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._iopub_seen: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._died: KernelDied | None = None
        self._state = "NEW"
        where = f"{self.connection_info.get('ip')}:{self.connection_info.get('shell_port')}"
        #: What this client dropped or lost, by kind (warnings are rate-limited).
        self.drops = DropLog(log, f"AsyncKernelClient {where}")
        #: After an ``execute_reply``, how long (s) without any message of that execution
        #: before ``execute`` returns without the idle status (a counted, logged gap).
        self.idle_grace = IDLE_GRACE
        #: Output messages that may wait for a slow output hook before more are dropped.
        self.output_backlog = OUTPUT_BACKLOG
        #: The last ``execution_state`` the kernel published on IOPub.
        self.execution_state = "unknown"
        #: Whether the kernel greets IOPub subscriptions with ``iopub_welcome`` (protocol
        #: 5.5): once it has, IOPub readiness is awaited without nudging its shell.
        self.welcomes = False
        #: ``kernel_info_request`` nudges sent to learn that IOPub delivers (readiness).
        self.iopub_nudges = 0

    def __repr__(self) -> str:
        where = f"{self.connection_info.get('ip')}:{self.connection_info.get('shell_port')}"
        return f"<AsyncKernelClient {where} [{self._state}]>"

    @property
    def bad_signatures(self) -> int:
        """Messages dropped because their signature was missing, wrong or replayed."""
        return self.drops.counts.get(_BAD_SIGNATURE, 0)

    @property
    def malformed(self) -> int:
        """Messages dropped because they were not valid Jupyter messages."""
        return self.drops.counts.get(_MALFORMED, 0)

    @property
    def stray_replies(self) -> int:
        """Replies dropped because their parent was no request this client waits for."""
        return self.drops.counts.get(_STRAY, 0)

    # ---- connection ----

    @property
    def connected(self) -> bool:
        return self._state == "CONNECTED"

    async def connect(self) -> AsyncKernelClient:
        """Open the channels on the running loop (idempotent)."""
        if self._state == "CONNECTED":
            return self
        if self._state == "CLOSED":
            raise KernelHubError(f"{self!r} is closed; create a new client")
        self._loop = asyncio.get_running_loop()
        self._iopub_seen = asyncio.Event()
        self._transport.open(self._on_message)
        self._state = "CONNECTED"
        if self.manager is not None:
            self._watcher = asyncio.ensure_future(self._watch_manager(self.manager))
        return self

    async def _watch_manager(self, manager: KernelManager) -> None:
        """Fail the waiting requests with :class:`KernelDied` when the kernel ends."""
        try:
            status = await manager.wait()
        except Exception as exc:  # noqa: BLE001 - a broken watch must not break close()
            log.warning("%r stopped watching %r: its wait() failed (%r)", self, manager, exc)
            return
        self._death(manager, status)

    def _death(self, manager: KernelManager, status: int | None) -> None:
        if self._died is None:
            self._died = KernelDied(
                f"the kernel {manager.type_id} died (exit status {status})", exit_status=status
            )
            self.abort(self._died)

    def abort(self, err: BaseException) -> None:
        """Fail every request waiting for a reply with *err*; call on the client's loop.

        The client stays connected: later requests go out as usual. A
        :class:`~kernel_hub.KernelClient` calls it when its kernel's process dies.
        """
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(err)
        for ex in self._executions.values():
            if not ex.done.done():
                ex.done.set_exception(err)
        self._pending.clear()
        self._executions.clear()

    async def close(self) -> None:
        """Close the channels; requests still waiting fail with :class:`KernelHubError`."""
        if self._state == "CLOSED":
            return
        self._state = "CLOSED"
        try:
            if self._watcher is not None:  # a cancel of our caller meanwhile goes on up...
                await cancel_and_wait(self._watcher)
        finally:  # ... after the sockets are closed (a cancelled launch leaked them)
            self._transport.close()
            self.drops.flush()
            self.abort(KernelHubError("the client was closed while waiting for a reply"))

    def on(self, channel: str, handler: Handler) -> Callable[[], None]:
        """Call *handler* with every message received on *channel*; return a remover.

        Handlers run on the client's loop; one that raises is logged and ignored.
        """
        if channel not in self._handlers:
            raise ValueError(f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)}")
        self._handlers[channel].append(handler)
        return lambda: self.off(channel, handler)

    def off(self, channel: str, handler: Handler) -> None:
        """Stop calling *handler* for *channel* (what :meth:`on`'s remover does).

        :raises ValueError: when it is not registered.
        """
        self._handlers[channel].remove(handler)

    # ---- receiving ----

    def _on_message(self, channel: str, frames: list[bytes]) -> None:
        try:
            msg = self.session.deserialize(frames)
        except BadSignature as exc:
            self.drops.count(_BAD_SIGNATURE, f"{channel}: {exc}")
            return
        except ValueError as exc:
            self.drops.count(_MALFORMED, f"{channel}: {exc}")
            return
        parent_id = msg.parent_header.get("msg_id")
        if channel == "iopub":
            self._on_iopub(msg, parent_id)
        elif channel == "stdin":
            self._on_stdin(msg, parent_id)
        else:
            fut = self._pending.pop(parent_id, None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(msg)
            elif channel == "shell" and parent_id in self._executions:
                self._executions[parent_id].got_reply(msg)
            elif parent_id in self._nudges:
                self._nudges.discard(parent_id)
            else:
                self.drops.count(_STRAY, f"{msg.header['msg_type']} on {channel}")
        for handler in self._handlers[channel]:
            try:
                result = handler(msg)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result)
            except Exception:
                log.exception("%s handler %r failed", channel, handler)

    def _on_iopub(self, msg: Message, parent_id: str | None) -> None:
        seen = self._iopub_seen
        if seen is not None and not seen.is_set():
            seen.set()  # only until IOPub delivers: nothing more on the common path
            if msg.header.get("msg_type") == "iopub_welcome":
                self.welcomes = True
        is_status = msg.header.get("msg_type") == "status"
        if is_status:
            self.execution_state = msg.content.get("execution_state", self.execution_state)
        ex = self._executions.get(parent_id) if parent_id else None
        if ex is None:
            return
        if is_status:
            if self.execution_state == "idle":
                ex.got_idle()
            return
        ex.got_output(msg)  # queued: the hook runs later, never while the socket is read

    def _on_stdin(self, msg: Message, parent_id: str | None) -> None:
        if msg.header.get("msg_type") != "input_request":
            return
        ex = self._executions.get(parent_id) if parent_id else None
        hook = ex.stdin_hook if ex is not None else None
        if hook is None:
            return  # left to stdin handlers, which answer with client.input()
        asyncio.ensure_future(self._answer_input(hook, msg))

    async def _answer_input(self, hook: StdinHook, request: Message) -> None:
        try:
            value = hook(request.content.get("prompt", ""), bool(request.content.get("password")))
            if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                value = await value
        except Exception:
            log.exception("stdin_hook failed; answering with an empty string")
            value = ""
        self._send("stdin", self.session.msg("input_reply", {"value": str(value)}, parent=request))

    # ---- sending ----

    def _send(self, channel: str, msg: Message) -> None:
        if self._state != "CONNECTED":
            raise KernelHubError(f"{self!r} is not connected; use 'async with client:' first")
        self._transport.send(channel, self.session.serialize(msg))

    async def _wait(
        self, fut: asyncio.Future[Message], *, timeout: float | None, what: str
    ) -> Message:
        """Await *fut*, failing it with :class:`TimeoutError` after *timeout* seconds.

        A timer on the future instead of ``asyncio.timeout``/``wait_for``: no scope
        object, extra task or cancellation per request on the hot path.
        """
        if timeout is None:
            return await fut
        timer = fut.get_loop().call_later(timeout, expire, fut, what, timeout)
        try:
            return await fut
        finally:
            timer.cancel()

    async def request(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        channel: str = "shell",
        timeout: float | None = None,
        subshell_id: str | None = None,
    ) -> Message:
        """Send a ``*_request`` on *channel* and return its reply.

        :param subshell_id: run it on that subshell (see :meth:`create_subshell`).
        :raises TimeoutError: when no reply arrives within *timeout* seconds.
        :raises KernelDied: when the kernel's process dies before replying, or has died.
        :raises KernelHubError: with *subshell_id*, when the kernel has no subshells.
        """
        if self._died is not None:
            raise self._died
        if subshell_id is not None:
            await self.require_subshells(timeout=timeout)
        msg = self.session.msg(msg_type, content, subshell_id=subshell_id)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        msg_id = msg.header["msg_id"]
        self._pending[msg_id] = fut
        try:
            self._send(channel, msg)
            return await self._wait(
                fut, timeout=timeout, what=msg_type.replace("_request", "_reply")
            )
        finally:
            self._pending.pop(msg_id, None)

    # ---- readiness ----

    async def wait_for_ready(
        self,
        timeout: float | None = 60.0,
        *,
        on_answer: Callable[[Message], Awaitable[object]] | None = None,
    ) -> Message:
        """Wait until the kernel answers ``kernel_info`` and IOPub delivers; return the reply.

        The first ``kernel_info_request`` is queued before the kernel listens and
        is answered as soon as it does. IOPub subscriptions take effect a little
        later, so further requests are sent until one of their status messages
        arrives: then output of the next execution cannot be lost.

        :param on_answer: awaited with the ``kernel_info_reply`` as soon as it
            arrives, before IOPub is awaited (the kernel is up: signals may go to
            it, though another client's execution may keep IOPub's check waiting).
        """
        await self.connect()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        reply = await self.request(
            "kernel_info_request", timeout=None if deadline is None else timeout
        )
        self._kernel_info = reply
        if on_answer is not None:
            await on_answer(reply)
        await self._await_iopub(None if deadline is None else max(0.0, deadline - loop.time()))
        return reply

    def forget_iopub(self) -> None:
        """Wait again for IOPub to deliver before the next execution: the kernel's process changed.

        Called by :class:`~kernel_hub.KernelClient` when its kernel dies (the same
        sockets reach the restarted process, whose IOPub has to see their
        subscription before output can reach this client) and when the provider's
        link comes back (``connection_restored``: the sockets reconnected through it).
        """
        if self._iopub_seen is not None:
            self._iopub_seen.clear()

    def _greets(self) -> bool:
        """Whether the kernel sends ``iopub_welcome``: seen already, or protocol 5.5 or later."""
        if self.welcomes:
            return True
        info = self._kernel_info
        version = info.content.get("protocol_version") if info is not None else None
        try:
            major, minor = (int(x) for x in str(version).split(".")[:2])
        except ValueError:
            return False
        return (major, minor) >= (5, 5)

    async def _await_iopub(self, timeout: float | None) -> None:
        """Wait until IOPub delivers a message: its ``iopub_welcome``, or a nudge's status.

        Any IOPub message proves the subscription is in place (the kernel filters
        by it). A kernel that greets subscriptions (protocol 5.5; ipykernel 7 and
        xeus-python do) is given :data:`WELCOME_WAIT` seconds to do so, without
        traffic on its shell. Otherwise, or if no greeting comes (ipykernel greets
        only the first subscriber of a topic), it is nudged with
        ``kernel_info_request`` until the status of one arrives.
        """
        assert self._iopub_seen is not None
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def left() -> float | None:
            return None if deadline is None else max(0.0, deadline - loop.time())

        if not self._iopub_seen.is_set() and self._greets():
            wait = WELCOME_WAIT if deadline is None else min(WELCOME_WAIT, left() or 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._iopub_seen.wait()
        pause = 0.05
        while not self._iopub_seen.is_set():
            if self._died is not None:
                raise self._died
            nudge = self.session.msg("kernel_info_request")
            self._send("shell", nudge)  # its reply is simply ignored
            self.iopub_nudges += 1
            if len(self._nudges) < 64:  # a kernel that never answers must not grow the set
                self._nudges.add(nudge.header["msg_id"])
            # Backing off keeps a busy kernel's shell queue from filling with nudges.
            wait = pause if deadline is None else min(pause, left() or 0.0)
            pause = min(pause * 2, 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._iopub_seen.wait()
            if deadline is not None and loop.time() >= deadline and not self._iopub_seen.is_set():
                raise TimeoutError(
                    f"kernel answered but its IOPub channel was silent for {timeout} s"
                )

    # ---- requests ----

    async def execute(
        self,
        code: str,
        *,
        silent: bool = False,
        store_history: bool = True,
        user_expressions: Mapping[str, str] | None = None,
        allow_stdin: bool | None = None,
        stop_on_error: bool = True,
        output_hook: OutputHook | None = None,
        stdin_hook: StdinHook | None = None,
        subshell_id: str | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Run *code* and return the ``execute_reply`` once all its output has arrived.

        :param subshell_id: run it on that subshell (see :meth:`create_subshell`),
            beside what the main shell and the other subshells run.
        :param output_hook: called with every IOPub message of this execution
            (``stream``, ``display_data``, ``execute_result``, ``error``, …) except status,
            in order, from the client's loop but never while a socket is being read: a
            slow hook makes messages wait (up to :attr:`output_backlog`; more are
            dropped, counted in :attr:`drops` and logged), not the kernel's IOPub queue.
        :param stdin_hook: answers ``input()`` in the kernel: called with
            ``(prompt, password)``, returns the string (or an awaitable of it).
            ``allow_stdin`` defaults to whether a hook was given.
        :raises TimeoutError: when the reply or the final idle status does not
            arrive within *timeout* seconds (the execution keeps running; interrupt it).

        Output lost on the way (the kernel drops IOPub messages that a consumer is
        too slow to take) must not hang the call: once the reply has arrived, the
        idle status is awaited only while messages of this execution keep coming.
        After :attr:`idle_grace` seconds without any, the reply is returned and the
        gap is counted in :attr:`drops` and logged.

        :raises KernelDied: when the kernel's process (this client's manager's) dies
            while it runs, or has died.
        :raises KernelHubError: with *subshell_id*, when the kernel has no subshells.
        """
        if self._died is not None:
            raise self._died
        if subshell_id is not None:
            await self.require_subshells(timeout=timeout)
        if self._iopub_seen is not None and not self._iopub_seen.is_set():
            # Connected without wait_for_ready: a SUB socket misses what is published before
            # its subscription lands, which would lose this execution's output and idle status.
            await self._await_iopub(timeout)
        loop = asyncio.get_running_loop()
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": dict(user_expressions or {}),
            "allow_stdin": stdin_hook is not None if allow_stdin is None else allow_stdin,
            "stop_on_error": stop_on_error,
        }
        msg = self.session.msg("execute_request", content, subshell_id=subshell_id)
        msg_id = msg.header["msg_id"]
        ex = Execution(
            loop,
            output_hook,
            stdin_hook,
            idle_grace=self.idle_grace,
            backlog=self.output_backlog,
            on_gap=self.drops.count,
        )
        self._executions[msg_id] = ex
        try:
            self._send("shell", msg)
            return await self._wait(ex.done, timeout=timeout, what="execute_reply and idle status")
        finally:
            self._executions.pop(msg_id, None)
            ex.close()

    async def execute_interactive(
        self,
        code: str,
        *,
        timeout: float | None = None,
        output_hook: OutputHook | None = None,
        stdin_hook: StdinHook | None = None,
    ) -> Message:
        """Run *code*, printing its output like a console (stdout, stderr, results, tracebacks).

        Input requests are answered from this process's terminal unless a
        *stdin_hook* is given. Output messages the console printer cannot show
        (wrong-typed content) are counted in :attr:`drops` and logged with them.
        """
        return await self.execute(
            code,
            output_hook=output_hook or functools.partial(console_output_hook, drops=self.drops),
            stdin_hook=stdin_hook or terminal_input,
            timeout=timeout,
        )

    def input(self, value: str) -> None:
        """Answer the kernel's pending ``input_request`` with *value* (for stdin handlers)."""
        self._send("stdin", self.session.msg("input_reply", {"value": value}))

    # ---- control ----

    async def interrupt(self, *, timeout: float | None = 5.0) -> None:
        """Interrupt the running execution.

        Sends ``interrupt_request`` on the control channel when the kernel type's
        ``interrupt_mode`` is ``"message"``, else asks the manager to signal it.
        """
        if self.interrupt_mode == "message":
            await self.request("interrupt_request", channel="control", timeout=timeout)
        elif self.manager is not None:
            await self.manager.interrupt()
        else:
            raise KernelHubError(
                "cannot interrupt: the kernel's interrupt_mode is 'signal' and this client has "
                "no manager; get the client from a RunningKernel (kernel.client())"
            )

    async def shutdown(
        self,
        *,
        timeout: float = 5.0,
        restart: bool = False,
        manager: KernelManager | None = None,
    ) -> None:
        """Ask the kernel to shut down, wait for it to end, and kill it if it does not.

        Sends ``shutdown_request`` on the control channel and waits up to
        *timeout* seconds for the reply, then (with a manager) up to *timeout*
        more for the process to end, then kills it.

        :param restart: the ``restart`` field of the request (a relaunch follows).
        :param manager: the process's manager, if not this client's own.
        """
        with contextlib.suppress(TimeoutError, KernelDied, KernelHubError):
            await self.request(
                "shutdown_request", {"restart": restart}, channel="control", timeout=timeout
            )
        manager = manager or self.manager
        if manager is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await manager.wait()
        except TimeoutError:
            log.warning("kernel did not exit %s s after shutdown_request; killing it", timeout)
            await manager.kill()
