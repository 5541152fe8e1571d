"""The jupyter_client kernel provisioner ``kernel-hub``: a kernel_hub type behind a kernelspec.

A kernelspec written by ``kernel-hub jupyter install`` selects it with::

    "metadata": {"kernel_provisioner": {
        "provisioner_name": "kernel-hub",
        "config": {"type_id": "docker/py311", "pass_cwd": true}}}

jupyter_client (JupyterLab, Notebook, nbclient, papermill, ``jupyter console``)
then starts the kernel through ``hub.launch(type_id, kernel_id=<jupyter's id>,
restart=False)`` on the bridge's hub (:mod:`kernel_hub_jupyter.bridge`) and
manages it through its kernel_hub manager. jupyter_client runs its own
restarter, so kernel_hub's stays off for these kernels. With a
``[pool."<type id>"]`` table in the kernel_hub config file, a ready spare of
the type serves the launch: adapted to the notebook's directory and
``JPY_SESSION_NAME``, it takes jupyter's kernel id (the first launch in a
Jupyter server starts the pools, :func:`kernel_hub_jupyter.bridge.start_pools`;
one-shot clients such as papermill and nbclient start none).

:meth:`KernelHubProvisioner.launch_kernel` returns as soon as the kernel is
launched, as jupyter_client's own ``LocalProvisioner`` does, so that the
caller's wait for the kernel's first answer (nbclient's and papermill's
``startup_timeout``, ``--start-timeout``) governs; kernel_hub goes on waiting
on the bridge's loop, and a kernel that exits or never answers is reported
with its last output.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Protocol, cast

from jupyter_client.connect import port_names
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Bool, Float, Unicode

from kernel_hub import KernelHubError, NoSuchKernelType

from .bridge import PROVISIONER_NAME, call, claim, get_hub, start_pools

if TYPE_CHECKING:
    from collections.abc import Callable

    from jupyter_client.connect import KernelConnectionInfo

    from kernel_hub import KernelManager, RunningKernel

__all__ = ["KernelHubProvisioner", "PROVISIONER_NAME", "actionable"]

log = logging.getLogger(__name__)

#: The connection-info keys jupyter_client knows; kernel_hub's extras (nanny ports) stay here.
_JUPYTER_KEYS = (
    "shell_port",
    "iopub_port",
    "stdin_port",
    "control_port",
    "hb_port",
    "ip",
    "transport",
    "signature_scheme",
)

#: Environment variables of jupyter_client's that must not reach the kernel: kernel_hub
#: sets its own parent pid (its reaper), and the host's executable is not the kernel's.
_DROP_ENV = ("JPY_PARENT_PID", "PYTHONEXECUTABLE")


def _in_a_server() -> bool:
    """Whether this process is a running Jupyter server (a host that outlives one notebook)."""
    serverapp = sys.modules.get("jupyter_server.serverapp")
    return serverapp is not None and bool(serverapp.ServerApp.initialized())


def actionable(type_id: str, spec_name: str, exc: BaseException) -> str:
    """Return one line a JupyterLab user can act on, for a kernel_hub error at launch.

    A :class:`~kernel_hub.LaunchError`'s one-line ``summary`` is used; the
    kernel's last output, if any, is :func:`with_output`'s to add.

    :param type_id: the kernel_hub type the kernelspec points at.
    :param spec_name: the kernelspec's name.
    :param exc: what kernel_hub raised.
    """
    text = str(getattr(exc, "summary", exc)).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, NoSuchKernelType):
        return (
            f"kernelspec {spec_name!r} starts kernel_hub type {type_id!r}, which no installed "
            f"kernel_hub plugin offers any more ({first}); install the plugin that provided it, "
            "or run 'kernel-hub jupyter install' to update the kernelspecs"
        )
    if isinstance(exc, KernelHubError):
        return (
            f"kernel_hub could not start {type_id!r} (kernelspec {spec_name!r}): {first}. "
            f"Check it outside Jupyter with: kernel-hub run {type_id} -c 'print(1)'"
        )
    return f"kernel_hub could not start {type_id!r} (kernelspec {spec_name!r}): {exc!r}"


def with_output(message: str, exc: BaseException) -> str:
    """Return *message*, then the kernel's last output (a ``LaunchError``'s) on the lines below."""
    output = getattr(exc, "output", "")
    return f"{message}\nThe kernel's last output:\n{output}" if output else message


class _Launched(Protocol):
    """What ``hub.launch(on_launched=...)`` hands over: the kernel, before it answers."""

    @property
    def connection_info(self) -> Any: ...
    @property
    def state(self) -> Any: ...
    @property
    def manager(self) -> KernelManager: ...
    async def signal(self, signum: int) -> object: ...


class _Start:
    """One launch of the bridge's hub in flight, on the bridge's loop.

    :meth:`begin` returns once the kernel is launched (its connection info is
    known) or the launch has failed; the rest of the launch (waiting for the
    kernel's first answer) goes on in :attr:`task`. Its end is recorded in
    :attr:`kernel` or :attr:`error` (read from jupyter_client's thread too).
    """

    def __init__(self, provisioner: KernelHubProvisioner) -> None:
        self._provisioner = provisioner
        self._launched = asyncio.Event()
        #: The first launch's kernel: what jupyter_client connects to.
        self.launched: _Launched | None = None
        #: The launch was repeated with new ports, which jupyter_client does not know.
        self.moved = False
        self.task: asyncio.Task[RunningKernel] | None = None
        self.kernel: RunningKernel | None = None
        self.error: BaseException | None = None

    @classmethod
    def of_adopted(cls, provisioner: KernelHubProvisioner, kernel: RunningKernel) -> _Start:
        """Return the finished "launch" of a kernel adopted from an earlier process."""
        start = cls(provisioner)
        start.launched = kernel
        start.kernel = kernel
        return start

    @property
    def pending(self) -> bool:
        """True while the kernel has neither answered nor failed to start."""
        return self.kernel is None and self.error is None

    def _on_launched(self, launched: _Launched) -> None:
        if self.launched is None:
            self.launched = launched
            self._launched.set()
        else:
            self.moved = True

    async def begin(
        self, *, env: dict[str, str], cwd: str | None, connection: dict[str, Any] | None
    ) -> _Launched:
        """Start the launch; return the launched kernel, or raise what the launch raised.

        :param connection: the connection info of the kernel this one replaces (a
            restart): its ports and key are reused where the provider can.
        """
        p = self._provisioner
        hub = await get_hub()
        self.task = task = asyncio.create_task(
            hub.launch(
                p.type_id,
                kernel_id=p.kernel_id,
                env=env,
                cwd=cwd,
                connection=connection,
                ready_timeout=p.ready_timeout,
                restart=False,  # jupyter_client's restarter decides
                on_launched=self._on_launched,
            )
        )
        launched = asyncio.ensure_future(self._launched.wait())
        try:
            await asyncio.wait({task, launched}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()  # the caller gave up: the launch kills what it started
            raise
        finally:
            launched.cancel()
        if task.done() and task.exception() is not None:
            raise cast("BaseException", task.exception())
        task.add_done_callback(self._ended)
        assert self.launched is not None  # set before the task could succeed
        return self.launched

    def _ended(self, task: asyncio.Task[RunningKernel]) -> None:
        p = self._provisioner
        if task.cancelled():
            self.error = asyncio.CancelledError()
            return
        exc = task.exception()
        if exc is not None:
            self.error = exc
            log.error("%s", with_output(actionable(p.type_id, p.spec_name, exc), exc))
            return
        kernel = task.result()
        if self.moved:  # jupyter_client's client waits on the first launch's ports
            self.error = RuntimeError("launched again with new ports")
            log.error(
                "kernel_hub launched %r (kernelspec %r) again, with new ports, after another "
                "process took one of the first; jupyter_client cannot follow: restart the kernel",
                p.type_id,
                p.spec_name,
            )
            self._ending = asyncio.ensure_future(kernel.shutdown(now=True))
            return
        self.kernel = kernel

    async def stop(self) -> None:
        """Stop a launch still waiting for the kernel's answer; log the kernel's last output."""
        task = self.task
        if task is None or task.done():
            return
        p = self._provisioner
        if self.launched is not None:
            try:
                output = (await self.launched.manager.last_output()).strip()
            except Exception as exc:  # noqa: BLE001 - the output is a courtesy
                output = f"(not available: {exc!r})"
            log.warning(
                "kernel_hub kernel %r (kernelspec %r) was stopped before it answered%s",
                p.type_id,
                p.spec_name,
                f"; its last output:\n{output}" if output else " (it printed nothing)",
            )
        task.cancel()
        await asyncio.wait({task})  # the launch kills and cleans up what it started

    async def wait(self) -> None:
        """Return once the launch has ended (the kernel answered, or the launch failed)."""
        if self.task is not None:
            await asyncio.wait({self.task})


class KernelHubProvisioner(KernelProvisionerBase):
    """Start and manage a kernel_hub kernel for jupyter_client's ``KernelManager``.

    jupyter_client calls these coroutines from its own loop; each hops to the
    bridge's loop, where the process's one hub keeps every kernel.
    """

    #: The kernel_hub type id, e.g. ``"ipykernel/python3"`` (from the kernelspec's config).
    type_id = Unicode("", config=True, help="kernel_hub type id to launch")
    #: Pass jupyter's working directory (the notebook's folder) to the kernel. Off for types
    #: whose kernels run on another machine, where that path means nothing.
    pass_cwd = Bool(True, config=True, help="pass the notebook's directory as the kernel's cwd")
    #: kernel_hub's own bound on the wait for the kernel's first answer, after it is
    #: launched. jupyter_client's wait (``startup_timeout``) is the one that counts:
    #: :meth:`launch_kernel` returns before this wait. This one ends a kernel that
    #: no caller waits for.
    ready_timeout = Float(
        3600.0,
        config=True,
        help="kernel_hub's own bound (seconds) on a launched kernel's first answer; "
        "the caller's startup timeout applies first",
    )

    _start: _Start | None = None
    _exit_status: int | None = None
    #: jupyter_client's connection file registered with kernel_hub's reaper, and the
    #: function that withdraws it (see :meth:`_guard_connection_file`).
    _file_guard: tuple[str, Callable[[], None]] | None = None

    def __repr__(self) -> str:
        start = self._start
        kernel = self._kernel
        if kernel is not None:
            state = kernel.status
        elif start is not None and start.pending:
            state = "STARTING"
        else:
            state = "NO KERNEL"
        return f"<KernelHubProvisioner {self.type_id} {str(self.kernel_id)[:8]} [{state}]>"

    @property
    def _kernel(self) -> RunningKernel | None:
        """The kernel_hub kernel, once it has answered (``None`` before, or after a failure)."""
        return self._start.kernel if self._start is not None else None

    async def cpu_seconds(self) -> float | None:
        """CPU seconds the kernel's processes have used (``None``: not running, or unknown)."""
        kernel = self._kernel
        if kernel is None or kernel.status != "RUNNING":
            return None
        return await call(kernel.manager.cpu_seconds())

    async def running_kernel(self) -> RunningKernel:
        """Return the kernel_hub kernel once kernel_hub's own wait for its first answer is over.

        :meth:`launch_kernel` returns before that; a host that wants the
        :class:`~kernel_hub.RunningKernel` (its manager, ``describe()``) awaits
        this. The bridge's hub lists the kernel (``hub.get(kernel_id)``) from then on.

        :raises RuntimeError: when there is no kernel, or its start failed.
        """
        start = self._start
        if start is None:
            raise RuntimeError(f"{self!r} has no kernel: launch it first")
        await call(start.wait())
        if start.kernel is None:
            raise RuntimeError(f"{self!r}: the kernel did not start ({start.error!r})")
        return start.kernel

    @property
    def _starting(self) -> _Start | None:
        """The launch, while it still waits for the kernel's first answer."""
        start = self._start
        return start if start is not None and start.pending else None

    # ---- launch ----

    @property
    def has_process(self) -> bool:
        """True from :meth:`launch_kernel` until :meth:`cleanup` (jupyter asserts it)."""
        return self._start is not None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Prepare the environment; there is no command line (kernel_hub has the type's)."""
        kwargs.pop("extra_arguments", None)
        kwargs = await super().pre_launch(**kwargs)
        kwargs["cmd"] = list(self.kernel_spec.argv) if self.kernel_spec is not None else []
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        """Launch the type through the bridge's hub; return its connection info once launched.

        It returns before the kernel answers: the caller's own wait
        (``KernelClient.wait_for_ready(timeout=startup_timeout)``, as nbclient
        and papermill do) decides how long a start may take, while
        :meth:`poll` reports a kernel that exits or fails to start meanwhile
        (its last output is logged).

        :raises RuntimeError: with a message naming the type and what to do,
            when the launch itself fails (an unknown type, a missing image).
        """
        if not self.type_id:
            raise RuntimeError(
                f"kernelspec {self.spec_name!r} selects the kernel-hub provisioner without a "
                "'type_id' in its config; reinstall it with 'kernel-hub jupyter install'"
            )
        env = {
            k: v
            for k, v in (kwargs.get("env") or {}).items()
            if os.environ.get(k) != v and k not in _DROP_ENV
        }
        cwd = kwargs.get("cwd") if self.pass_cwd else None
        self._exit_status = None
        # A restart (jupyter_client keeps this provisioner): the same ports and key, so that
        # its clients and connection file stay valid, as with its own LocalProvisioner.
        previous = dict(self.connection_info) if self.connection_info else None
        adopted = await claim(str(self.kernel_id)) if previous is None else None
        if adopted is not None:
            # A kernel an earlier Jupyter server left running (KernelHubKernelManager
            # re-registers it under its id): attach to it instead of launching.
            start = _Start.of_adopted(self, adopted)
            launched: _Launched = adopted
            log.info("kernel_hub: %r adopted from an earlier server", self)
        else:
            # The first launch of a Jupyter server starts the configured pools (a later one
            # finds a ready spare); a server with KernelHubKernelManager did at its start.
            # A one-shot client (papermill, nbclient) runs its notebook and exits: spares
            # would only be started and shut down again.
            if _in_a_server():
                await start_pools(getattr(self.parent, "kernel_spec_manager", None))
            start = _Start(self)
            try:
                launched = await call(start.begin(env=env, cwd=cwd, connection=previous))
            except Exception as exc:
                message = with_output(actionable(self.type_id, self.spec_name, exc), exc)
                log.error("%s", message)
                raise RuntimeError(message) from exc
        self._start = start
        fields: dict[str, Any] = {k: launched.connection_info[k] for k in _JUPYTER_KEYS}
        # A CurveZMQ kernel: jupyter_client's clients (and its connection file) take the keys.
        for name in ("curve_publickey", "curve_secretkey"):
            if launched.connection_info.get(name):
                fields[name] = str(launched.connection_info[name])
        key = launched.connection_info.get("key", "")
        fields["key"] = key.encode() if isinstance(key, str) else key  # jupyter_client wants bytes
        # jupyter_client's TypedDict says str for the key, but its managers want bytes.
        info = cast("KernelConnectionInfo", fields)
        self._adopt_connection_file(launched, info)
        self.connection_info = info
        self._guard_connection_file()  # the path is often known already (jupyter_server)
        return info

    def _adopt_connection_file(self, kernel: _Launched, info: KernelConnectionInfo) -> None:
        """Make jupyter_client use a local kernel's connection file instead of writing a second.

        kernel_hub's file is 0600 and removed by its reaper even if this process
        is killed. jupyter_client then finds the file equal to what
        :meth:`launch_kernel` returns and loads nothing from it, so the ports are
        loaded here, as ``LocalProvisioner.pre_launch`` does.
        """
        own_file = kernel.state.get("connection_file")
        km = self.parent
        if km is not None and own_file and os.path.exists(own_file):
            for name in port_names:
                setattr(km, name, 0)
            km.load_connection_info(info)
            km.connection_file = own_file

    async def post_launch(self, **kwargs: Any) -> None:
        """Guard jupyter_client's connection file, now written: :meth:`_guard_connection_file`."""
        await super().post_launch(**kwargs)
        self._guard_connection_file()

    def _guard_connection_file(self) -> None:
        """Have kernel_hub's reaper remove jupyter_client's connection file if this process dies.

        A kernel with no local connection file of kernel_hub's (Docker, SSH)
        gets one written by jupyter_client after :meth:`launch_kernel` returns
        (0600, with the key), which jupyter_client removes only when it shuts the
        kernel down: a Jupyter server killed with ``kill -9`` would leave it
        forever. Called at the end of :meth:`launch_kernel` (jupyter_server
        names the file before the launch) and in :meth:`post_launch` (others
        name it when they write it). A restart keeps the registration, as
        jupyter_client keeps the file and rewrites it for the new kernel; a new
        path replaces it; :meth:`cleanup` without restart withdraws it.
        """
        km = self.parent
        path = str(getattr(km, "connection_file", "") or "")
        kernel = self._start.launched if self._start is not None else None
        if kernel is not None and path == kernel.state.get("connection_file"):
            path = ""  # kernel_hub's own (adopted): its reaper has it already
        old = self._file_guard
        if old is not None and old[0] == path:
            return
        from kernel_hub.provider import reap_on_exit

        self._file_guard = (path, reap_on_exit([path])) if path else None
        if old is not None:
            old[1]()

    def _withdraw_connection_file(self) -> None:
        guard, self._file_guard = self._file_guard, None
        if guard is not None:
            guard[1]()

    @property
    def spec_name(self) -> str:
        """The kernelspec's name, for messages."""
        spec = self.kernel_spec
        return getattr(spec, "name", "") or os.path.basename(getattr(spec, "resource_dir", ""))

    # ---- management ----

    async def poll(self) -> int | None:
        """Return ``None`` while the kernel starts or runs, else its exit status (``0`` if unknown).

        A kernel that failed to start (it exited, or did not answer within
        :attr:`ready_timeout`) is ``1`` if its own status is unknown.
        """
        if self._starting is not None:
            return None
        start, kernel = self._start, self._kernel
        if kernel is None and start is not None and start.error is not None:
            return self._failed_status(start)
        if kernel is None:
            return self._exit_status if self._exit_status is not None else 0
        if kernel.status in ("RUNNING", "STARTING", "SHUTTING_DOWN", "RESTARTING"):
            return None
        return self._status_of(kernel)

    def _failed_status(self, start: _Start) -> int:
        status = start.launched.manager.exit_status if start.launched is not None else None
        self._exit_status = status if status else 1
        return self._exit_status

    async def wait(self) -> int | None:
        """Return once the kernel has ended, woken by its kernel_hub manager (no polling)."""
        starting = self._starting
        if starting is not None:
            await call(starting.wait())
            if starting.error is not None:
                return self._failed_status(starting)
        kernel = self._kernel
        if kernel is None:
            return self._exit_status
        await call(kernel.wait())
        return self._status_of(kernel)

    def _status_of(self, kernel: RunningKernel) -> int:
        status = kernel.manager.exit_status
        self._exit_status = status if status is not None else 0
        return self._exit_status

    async def send_signal(self, signum: int) -> None:
        """Send *signum* to the kernel; SIGINT goes through the manager's ``interrupt``.

        jupyter_client interrupts before every shutdown, also of a dead kernel: a
        kernel that has ended is not an error here. A kernel that has not answered
        yet gets it once it has (kernel_hub holds it; a SIGINT while ipykernel
        imports would end it), or never if its start fails; this returns at once.
        """
        starting, kernel = self._starting, self._kernel
        if starting is not None and starting.launched is not None:
            launched = starting.launched  # it has not answered yet: held until it does
            try:
                await call(launched.signal(signum))
            except Exception as exc:  # noqa: BLE001 - its start failed meanwhile: nothing to signal
                log.debug("%r: signal %s not delivered: %r", self, signum, exc)
            return
        if kernel is None or kernel.status == "DEAD":
            return
        manager = kernel.manager
        try:
            if signum == signal.SIGINT:
                await call(manager.interrupt())
            else:
                await call(manager.signal(signum))
        except Exception as exc:  # noqa: BLE001 - a signal to a dying kernel is not an error
            log.debug("%r: signal %s not delivered: %r", self, signum, exc)

    async def shutdown_requested(self, restart: bool = False) -> None:
        """End the kernel_hub kernel as a shutdown, now that jupyter_client has asked it to end.

        jupyter_client sends the ``shutdown_request`` itself and then calls this.
        Left alone, the kernel's exit would reach the hub as a death (a ``died``
        event with status 0); so the hub's own polite shutdown runs here: it stops
        watching the kernel first, asks it to end (a second request, which a
        kernel already ending may leave unanswered), waits for the exit, kills
        it after half of :meth:`get_shutdown_wait_time` for each step, releases
        what the launch made and reports ``shutdown``. A kernel that has not
        answered yet is stopped (its last output is logged).
        """
        starting = self._starting
        if starting is not None:
            await call(starting.stop())
            return
        kernel = self._kernel
        if kernel is None or kernel.status != "RUNNING":
            return
        recommended = float(getattr(self.parent, "shutdown_wait_time", 5.0))
        timeout = self.get_shutdown_wait_time(recommended) / 2
        await call(kernel.shutdown(timeout=timeout))

    async def kill(self, restart: bool = False) -> None:
        """Kill the kernel at once (and what it started); it is not restarted by kernel_hub.

        A kernel that has not answered yet is stopped, and its last output logged.
        """
        starting = self._starting
        if starting is not None:
            await call(starting.stop())
            return
        kernel = self._kernel
        if kernel is None:
            return
        await call(kernel.shutdown(now=True))

    async def terminate(self, restart: bool = False) -> None:
        """Ask the kernel to end with SIGTERM; :meth:`wait` sees it go."""
        await self.send_signal(signal.SIGTERM)

    async def cleanup(self, restart: bool = False) -> None:
        """Release everything the launch made (files, tunnels, containers); idempotent.

        jupyter_client calls it after each shutdown, and before a relaunch with
        *restart* true; nbclient may call it twice. Without *restart* the guard
        of jupyter_client's connection file is withdrawn (jupyter_client has
        removed the file).
        """
        start, kernel = self._start, self._kernel
        if not restart:
            # jupyter_client has removed its connection file by now; on a restart it keeps it.
            self._withdraw_connection_file()
            self.connection_info = {}  # a later launch is a new kernel, not a restart
        if start is None:
            return
        await call(start.stop())  # a kernel still starting: the launch cleans up after itself
        if kernel is not None:
            # A kernel that already ended: this waits for its cleanup.
            await call(kernel.shutdown(now=True))
            self._status_of(kernel)
        self._start = None

    def detach(self) -> None:
        """Forget the kernel and leave it running, for the next Jupyter server to adopt.

        Called by :class:`~kernel_hub_jupyter.kernelmanager.KernelHubKernelManager`
        when the server stops, before jupyter_client's ``cleanup_resources``
        (which then finds nothing to end), and before the bridge's hub detaches
        its kernels (:func:`kernel_hub_jupyter.bridge.detach`).
        """
        self._start = None

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        """Give remote kernels (containers, SSH) at least 10 s to end politely."""
        kernel = self._kernel
        if kernel is not None and kernel.state.get("connection_file") is None:
            return max(recommended, 10.0)
        return recommended

    async def get_provisioner_info(self) -> dict[str, Any]:
        """Add the kernel's kernel_hub description (for hosts that persist kernels)."""
        info: dict[str, Any] = await super().get_provisioner_info()
        if self._kernel is not None:
            info["kernel_hub"] = self._kernel.describe()
        return info
