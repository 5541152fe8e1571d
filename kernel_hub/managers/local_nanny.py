"""The nanny launch mode: any local (command-line) kernel type, served by a nanny on this machine.

``hub.launch(type_id, nanny=True)`` starts :mod:`kernel_hub.nanny` as a child
process here, which starts the type's argv and serves its manager over signed
ZeroMQ. The kernel can then be managed (interrupted, killed, restarted) by any
process that holds its connection info, not only by the one that launched it:
what ``kernel-hub launch --nanny`` offers on the command line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from ..contract.errors import LaunchError
from ..contract.types import LaunchResult
from ..wire.curve import curve_for, curve_keys
from ..wire.registration import registration_timeout, registration_wanted
from .argv import expand_env, format_argv
from .reaper import reap_on_exit
from .remote import NannyManager

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..contract.types import KernelType, LaunchRequest

__all__ = ["LOCAL_NANNY", "LocalNannyManager", "launch_under_nanny"]

#: ``state["launch_mode"]`` of a kernel the hub runs under a local nanny.
LOCAL_NANNY = "nanny"

log = logging.getLogger("kernel_hub.nanny")


class LocalNannyManager(NannyManager):
    """A :class:`NannyManager` of a nanny this process started: it also reaps the nanny.

    :meth:`wait` returns when the kernel dies or the nanny process exits,
    whichever comes first; :meth:`cleanup` waits for the nanny to exit (and
    kills it if it does not), so no zombie or stray nanny is left.
    """

    def __init__(
        self,
        connection_info: Mapping[str, Any],
        state: Mapping[str, Any],
        *,
        process: asyncio.subprocess.Process,
        type_id: str = "",
        forget: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(connection_info, state, type_id=type_id)
        self.process = process
        self._forget = forget

    async def wait(self) -> int | None:
        kernel = asyncio.ensure_future(super().wait())
        nanny = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait({kernel, nanny}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nanny.cancel()
            if not kernel.done():
                kernel.cancel()
        if kernel.done() and not kernel.cancelled():
            return kernel.result()
        log.warning("%r: the nanny process exited (status %s)", self, self.process.returncode)
        return self.exit_status

    async def cleanup(self) -> None:
        await super().cleanup()
        try:
            async with asyncio.timeout(10.0):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._forget()  # ended the normal way: the reaper need not SIGTERM it


async def _stop_nanny(proc: asyncio.subprocess.Process, timeout: float = 10.0) -> None:
    """End a nanny whose start is abandoned: SIGTERM ends its kernel and work dir too.

    SIGKILL would leave them (the kernel runs in its own session); it is the
    last resort for a nanny that does not end within *timeout*.
    """
    if proc.returncode is None:
        proc.terminate()
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except TimeoutError:
        proc.kill()
    await proc.wait()


async def launch_under_nanny(
    kernel_type: KernelType,
    request: LaunchRequest,
    *,
    python: str = sys.executable,
    stderr: int | None = None,
    timeout: float = 60.0,
    progress: Callable[[str, str], object] = lambda step, message: None,
    lease: float | None = None,
) -> LaunchResult:
    """Start a nanny on this machine running *kernel_type*'s argv; return it with its manager.

    The nanny runs in its own session (no terminal signals), gets the kernel
    type's environment through its own (never on its command line), and
    fills ``{connection_file}``; the other argv templates are filled here.
    A kernel that gets CurveZMQ (:func:`~kernel_hub.provider.curve_for`) gets it
    from the nanny (``--curve on``), which makes its own sockets Curve servers too; a
    relaunch's keypair goes to the nanny in a 0600 file it deletes at once.

    :param python: the interpreter that runs ``nanny.py`` (needs pyzmq).
    :param stderr: where the nanny's log goes (default: :data:`subprocess.DEVNULL`
        unless the ``kernel_hub`` logger is enabled for DEBUG).
    :param progress: called with a step and a message as the start goes on: ``nanny``
        (spawned, waiting for its handshake), ``nanny started`` (its kernel runs).
    :param lease: for a kernel that outlives its host (``request.outlive``): the
        nanny's lease, and the nanny is not registered with the reaper, so the
        host's death leaves it running for *lease* seconds, for a new host to
        adopt; then it ends its kernel and exits. ``None``: it ends with the host.
    :raises LaunchError: when the type has no argv or the nanny reports an error.
    """
    from .. import nanny

    if lease is None and request.outlive:
        lease = request.outlive

    if not kernel_type.argv:
        raise LaunchError(
            f"kernel type {kernel_type.id} has no argv, so it cannot run under a local nanny; "
            "nanny=True is for command-line kernel types such as ipykernel/python3 or spec/<name>"
        )
    cwd = request.cwd
    if cwd is not None and not os.path.isdir(cwd):  # noqa: ASYNC240 - one stat, local
        what = "is not a directory" if os.path.exists(cwd) else "does not exist"  # noqa: ASYNC240
        raise LaunchError(
            f"cannot launch {kernel_type.id}: working directory {cwd!r} {what}; "
            "give the path of an existing directory as cwd"
        )
    if lease is not None or (
        stderr is None and not logging.getLogger("kernel_hub").isEnabledFor(logging.DEBUG)
    ):
        stderr = subprocess.DEVNULL  # a nanny that outlives us must not write to our stderr
    argv = format_argv(
        kernel_type.argv,
        resource_dir=kernel_type.resource_dir or "",
        kernel_id=request.kernel_id,
        prefix=sys.prefix,
    )
    env = dict(request.env)
    # Same precedence as local kernels: caller's env > the type's env (with ${VARS}) > ours.
    full_env = {**os.environ, **env}
    full_env = {**full_env, **expand_env(kernel_type.env, full_env), **env}
    # Run as a remote nanny runs, from stdin (nanny.BOOTSTRAP: this Python's compiled code,
    # no source to compile first); as a script path, its directory (kernel_hub/) would come
    # first on sys.path and shadow the standard library's "types" module.
    cmd = [python, "-c", nanny.BOOTSTRAP]
    cmd += ["--argv", json.dumps(argv), "--kernel-name", kernel_type.name]
    if cwd is not None:
        cmd += ["--cwd", cwd]
    if lease is not None:
        # It outlives this process: a daemon (its first process relays the handshake and
        # exits), so that this process holds no child of it, and no asyncio transport that
        # would kill it when collected or outlive the loop it was made on.
        cmd += ["--lease", f"{lease:g}", "--daemon"]
    if registration_wanted(kernel_type.metadata, request.params):
        # The nanny starts the kernel with the registration handshake: no port guessed.
        seconds = registration_timeout(request.params)
        cmd += ["--registration", "--registration-timeout", f"{seconds:g}"]
    old = request.connection or {}
    # Secrets follow the nanny's code on its stdin (--secrets -): never in argv, the
    # environment or a file.
    secrets: dict[str, str] = {}
    if curve_for(kernel_type, request):
        # The keys are chosen here (a relaunch keeps its own, as its key), so that the
        # nanny starts the kernel before it imports pyzmq.
        secrets.update(curve_keys(old))
        cmd += ["--curve", "on"]
    if old.get("key") is not None and old.get("ip", "127.0.0.1") == "127.0.0.1":
        # A relaunch: the nanny reuses the old kernel's ports (if free) and key.
        secrets["key"] = str(old["key"])
        ports = [old.get(f"{c}_port") for c in ("shell", "iopub", "stdin", "control", "hb")]
        if all(isinstance(p, int) for p in ports):
            cmd += ["--ports", json.dumps(ports)]
    if secrets:
        cmd += ["--secrets", "-"]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=full_env,
        start_new_session=True,
    )
    assert proc.stdin is not None
    # The nanny reads its code (and keys) from stdin; the pipe is written and closed by the loop.
    proc.stdin.write(nanny.payload() + (json.dumps(secrets).encode() + b"\n" if secrets else b""))
    proc.stdin.close()
    # Before anything is awaited: should this process be killed outright from here on, the
    # reaper SIGTERMs the nanny (it ends its kernel and work dir). Killed before this line,
    # this process cannot read the handshake, and the nanny, unable to write it, ends itself.
    # One that outlives us (a lease) is left to its lease instead.
    forget = reap_on_exit(terminate=proc.pid) if lease is None else (lambda: None)
    assert proc.stdout is not None
    handshake: dict[str, Any]
    try:
        progress("nanny", f"starting a nanny (pid {proc.pid}) for {kernel_type.id}")
        try:
            async with asyncio.timeout(timeout):
                line = await proc.stdout.readline()
            handshake = json.loads(line) if line else {"error": "it exited without a handshake"}
        except (TimeoutError, ValueError) as exc:
            handshake = {"error": f"no handshake line ({exc!r})"}
    except BaseException:  # cancelled (Ctrl-C): the nanny may have started its kernel already
        await _stop_nanny(proc)
        forget()
        raise
    if "error" in handshake:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        forget()
        raise LaunchError(f"the nanny could not start {kernel_type.id}: {handshake['error']}")
    state = {k: handshake[k] for k in ("nanny_pid", "kernel_pid", "workdir")}
    state["launch_mode"] = LOCAL_NANNY
    info = handshake["connection_info"]
    progress("nanny started", f"the nanny started kernel pid {state['kernel_pid']}")
    if lease is not None:
        await proc.wait()  # the daemon's first process, gone once it relayed the handshake
        daemon = NannyManager(info, state, type_id=kernel_type.id)
        return LaunchResult(info, daemon.describe(), manager=daemon)
    manager = LocalNannyManager(info, state, process=proc, type_id=kernel_type.id, forget=forget)
    return LaunchResult(info, manager.describe(), manager=manager)
