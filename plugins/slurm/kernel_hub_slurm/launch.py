"""Launch a kernel as a Slurm batch job: submit, watch the queue, take the nanny's registration.

1. A private 0700 directory under the table's ``job_dir`` gets a copy of the
   nanny and ``register.json`` (0600): the registration endpoint's address, the
   kernel's key (chosen here), its argv, cwd and environment.
2. ``sbatch`` reads a job script from stdin that runs the setup lines and then
   ``exec``\\ s the nanny with ``--register <dir>/register.json``. The script
   holds no secret: the key is in no command line, script or job environment.
3. While the job waits, ``squeue`` is polled every ``poll_interval`` seconds and
   each change of state or reason becomes a ``progress`` event (with the queue
   position while pending).
4. On the node the nanny reads and deletes the file, starts the kernel with that
   key, binds its ports, and dials back with a signed handshake. The launch
   returns; the hub then waits for the kernel to answer. A kernel of protocol 5.6
   or later (the table's ``kernel_protocol_version``, or ``params={"registration":
   True}``) binds its own ports instead and reports them to the nanny (the
   registration handshake, JEP 66), which dials back with those.

Whatever goes wrong, and on cancellation or timeout, the job is ``scancel``\\ ed
and its directory removed before the error propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import time
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import (
    KernelHubError,
    LaunchError,
    LaunchResult,
    curve_keys,
    nanny_source,
    registration_timeout,
    registration_wanted,
)

from .cluster import LocalRunner, SlurmCLI, SlurmUnavailable
from .login import LoginRunner
from .registration import RegistrationEndpoint

if TYPE_CHECKING:
    from collections.abc import Callable

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest

    from .cluster import CommandRunner, JobStatus
    from .config import SlurmKernelConfig
    from .manager import SlurmKernelManager

__all__ = ["job_script", "launch_job", "pending_message"]

log = logging.getLogger("kernel_hub.slurm")

NANNY_FILE = "nanny.py"
REGISTER_FILE = "register.json"
JOB_LOG = "job.log"
JOB_ID_FILE = "job_id"
DIR_PREFIX = "kernel-"


async def sweep_job_dirs(runner: CommandRunner, cli: SlurmCLI, base: str) -> list[str]:
    """Remove the job dirs under *base* whose job has left the queue; return their paths.

    A host that was killed leaves its kernels' dirs behind (their jobs end by
    themselves: a nanny whose host never answers exits). The next launch with
    the same ``job_dir`` removes every such dir whose ``job_id`` names a job
    Slurm no longer has; dirs of queued or running jobs (a kernel another
    process may re-attach to) and dirs without a job id yet are left alone.
    """
    names = [n for n in await runner.list_dir(base) if n.startswith(DIR_PREFIX)]
    if not names:
        return []
    queued = await cli.queued_jobs()
    if queued is None:
        return []
    removed = []
    for name in names:
        path = os.path.join(base, name)
        job_id = await runner.read_file(os.path.join(path, JOB_ID_FILE))
        if job_id is not None and job_id.decode(errors="replace").strip() not in queued:
            await runner.remove_tree(path)
            removed.append(path)
    if removed:
        log.info("removed %d job dirs of Slurm kernels that ended: %s", len(removed), removed)
    return removed


def job_script(kc: SlurmKernelConfig, job_dir: str, *, kernel_id: str) -> str:
    """Return the batch script: setup lines, then the nanny in dial-back mode (no secrets)."""
    nanny = shlex.quote(os.path.join(job_dir, NANNY_FILE))
    register = shlex.quote(os.path.join(job_dir, REGISTER_FILE))
    lines = [
        "#!/bin/sh",
        f"# kernel_hub: slurm/{kc.name}, kernel {kernel_id}",
        *kc.setup,
        # exec: the nanny is the batch step itself, so `scancel --batch --signal` reaches it.
        f"exec {shlex.quote(kc.python)} {nanny} --register {register}",
        "",
    ]
    return "\n".join(lines)


async def _tail(runner: CommandRunner, path: str, lines: int = 5) -> str:
    data = await runner.read_file(path)
    text = (data or b"").decode("utf-8", "replace")
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:] if ln.strip())


#: Pending reasons with which a job can never start as asked (Slurm keeps it pending anyway,
#: in case the partition is changed): the launch fails at once instead of after start_timeout.
NEVER_STARTS = {
    "PartitionConfig": (
        "it asks for more than any node of its partition has (cpus, mem, gres)",
        "Ask for less in [slurm.{name}] (or the launch params), or choose another partition",
    ),
    "PartitionNodeLimit": (
        "it asks for more nodes than its partition allows",
        "Fix the job fields in [slurm.{name}], or choose another partition",
    ),
    "PartitionTimeLimit": (
        "its time limit is longer than its partition allows",
        "Lower 'time' in [slurm.{name}] (or pass params={{'time': ...}}), or choose another "
        "partition",
    ),
}


def never_starts_message(job_id: str, tag: str, name: str, reason: str) -> str:
    """Return the one-line error of a job Slurm keeps pending with a reason in NEVER_STARTS."""
    why, fix = NEVER_STARTS[reason]
    return (
        f"Slurm job {job_id} of {tag} can never start ({reason}): {why}; it was cancelled. "
        + fix.format(name=name)
    )


async def _runner_for(hub: HubContext | None, kc: SlurmKernelConfig) -> CommandRunner:
    """Return where the table's Slurm is: this machine, or its login node over SSH."""
    if kc.login is None:
        return LocalRunner()
    from .login import login_target

    return LoginRunner(login_target(hub, kc.login, table=kc.name))


async def launch_job(
    hub: HubContext | None,
    kernel_type: KernelType,
    request: LaunchRequest,
    kc: SlurmKernelConfig,
    *,
    runner: CommandRunner | None = None,
) -> LaunchResult:
    """Submit *kc*'s job and return once its nanny has registered.

    :raises LaunchError: naming the job, what went wrong and how to fix it;
        nothing is left in the queue or on disk.
    """
    from .manager import SlurmKernelManager

    tag = f"slurm/{kc.name}"
    try:  # a bad param fails before anything is submitted
        wanted = registration_wanted(kernel_type.metadata, request.params)
        seconds = registration_timeout(request.params) if wanted else None
    except LaunchError as exc:
        raise LaunchError(f"cannot launch {tag}: {exc}") from None
    own_runner = runner is None
    if runner is None:
        try:
            runner = await _runner_for(hub, kc)
        except KernelHubError as exc:
            raise LaunchError(f"cannot launch slurm/{kc.name}: {exc}") from None
    cli = SlurmCLI(runner)
    kernel_id = request.kernel_id

    def emit(kind: str, **data: Any) -> None:
        if hub is not None:
            hub.emit(kind, kernel_id, kernel_type.id, **data)

    login = runner if isinstance(runner, LoginRunner) else None
    if kc.via_login and login is None:
        raise LaunchError(
            f"cannot launch {tag}: route = 'login' needs a login node; set login in "
            f"[slurm.{kc.name}], or route = 'direct'"
        )
    via_login = login is not None and kc.via_login
    job_id: str | None = None
    job_dir: str | None = None
    endpoint: RegistrationEndpoint | None = None
    forward: Any = None
    try:
        try:
            # Through the login node the endpoint listens here only, on loopback: the nanny
            # reaches it through a port the login node forwards over the SSH connection.
            endpoint = RegistrationEndpoint("127.0.0.1" if via_login else kc.register_ip)
        except Exception as exc:  # noqa: BLE001 - zmq's bind errors name no fix
            raise LaunchError(
                f"cannot launch {tag}: cannot listen for the job's registration on "
                f"{kc.register_ip} ({exc}); set register_ip in [slurm.{kc.name}] to an "
                "address of this host"
            ) from None
        url = endpoint.url
        if login is not None and via_login:
            dial = kc.dial_ip  # the login node's address as the nodes reach it
            forward = await login.forward_here(dial, int(url.rsplit(":", 1)[1]))
            host = f"[{dial}]" if ":" in dial else dial
            url = f"tcp://{host}:{forward.get_port()}"
        base = await runner.expand_user(kc.job_dir)
        with contextlib.suppress(KernelHubError):
            await sweep_job_dirs(runner, cli, base)
        job_dir = await runner.make_private_dir(base, f"{DIR_PREFIX}{kernel_id[:8]}-")
        await runner.write_private_file(
            os.path.join(job_dir, NANNY_FILE), nanny_source().encode("utf-8")
        )
        env = {**dict(kc.env), **dict(request.env)}
        register = {
            "url": url,
            "key": endpoint.key,
            "signature_scheme": "hmac-sha256",
            "argv": list(kc.kernel_argv()),
            "cwd": await runner.expand_user(cwd) if (cwd := request.cwd or kc.cwd) else None,
            "env": env,
            "ip": kc.kernel_ip,
            "kernel_name": kc.name,
            "register_timeout": kc.register_timeout,
            # How long the kernel outlives a host that stopped answering (the table's lease).
            "lease": kc.lease,
        }
        if seconds is not None:
            # The kernel binds its own ports on the node and reports them to the nanny.
            register.update(registration=True, registration_timeout=seconds)
        curve: dict[str, str] = {}
        if request.transport_encryption != "disabled":
            # Chosen here, as the key is: they reach the job only in this 0600 file, and the
            # nanny never sends them back (it says whether it used them). A relaunch keeps them.
            curve = curve_keys(request.connection)
            register.update(curve, curve=request.transport_encryption)
        await runner.write_private_file(
            os.path.join(job_dir, REGISTER_FILE), json.dumps(register).encode()
        )
        options = [
            f"--job-name=kernel-hub-{kc.name}",
            f"--output={os.path.join(job_dir, JOB_LOG)}",
            f"--chdir={job_dir}",
            "--no-requeue",
            *kc.sbatch_options(),
        ]
        emit("progress", step="submitting", message=f"submitting {tag} with sbatch")
        try:
            job_id = await cli.sbatch(job_script(kc, job_dir, kernel_id=kernel_id), options)
        except SlurmUnavailable as exc:
            raise LaunchError(f"cannot launch {tag}: {exc}") from None
        except KernelHubError as exc:
            raise LaunchError(
                f"cannot launch {tag}: {exc}; fix the job fields in [slurm.{kc.name}] "
                "(or the launch params)"
            ) from None
        await runner.write_private_file(os.path.join(job_dir, JOB_ID_FILE), job_id.encode())
        emit("progress", step="submitted", job_id=job_id, message=f"Slurm job {job_id}")
        hint = "" if "registration" in request.params else _registration_hint(kc)
        handshake = await _wait_registration(cli, endpoint, job_id, job_dir, kc, emit, hint)
    except BaseException as exc:
        if endpoint is not None:
            endpoint.close()
        if forward is not None and login is not None:
            with contextlib.suppress(Exception):
                await login.stop_forward(forward)
        with contextlib.suppress(Exception):
            if job_id is not None:
                await cli.cancel(job_id)
        with contextlib.suppress(Exception):
            if job_dir is not None:
                await runner.remove_tree(job_dir)
        if own_runner:
            with contextlib.suppress(Exception):
                await runner.close()
        if isinstance(exc, SlurmUnavailable):
            raise LaunchError(f"cannot launch {tag}: {exc}") from None
        raise
    endpoint.close()
    info = {**handshake["connection_info"], "key": endpoint.key}
    if handshake.get("curve") and curve:
        info.update(curve)
    tunnels: Any = None
    if login is not None and via_login:
        with contextlib.suppress(Exception):
            await login.stop_forward(forward)
        remote = {k: v for k, v in info.items() if k == "ip" or k.endswith("_port")}
        try:
            tunnels = await login.open_tunnels(
                remote, key=login.tunnel_key(str(job_id)), preferred=None
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await cli.cancel(str(job_id))
            with contextlib.suppress(Exception):
                await runner.remove_tree(str(job_dir))
            if own_runner:
                with contextlib.suppress(Exception):
                    await runner.close()
            if isinstance(exc, OSError):
                raise LaunchError(
                    f"cannot forward the ports of {tag} from its node through the "
                    f"{runner.label} to 127.0.0.1 here: {exc}"
                ) from None
            raise
        # The client connects to local ports only; the login node relays to the node.
        info = tunnels.connection_info(info)
    state = {
        "kernel_id": kernel_id,
        "config_name": kc.name,
        "job_id": job_id,
        "job_dir": job_dir,
        "node": handshake.get("hostname"),
        "time": kc.time,
        "watch_interval": kc.watch_interval,
        "runner": runner.to_state(),
        "lease": kc.lease,
        "route": "login" if tunnels is not None else "direct",
        # The kernel's own address and ports on its node (the tunnels' far ends).
        "remote_info": {
            k: v
            for k, v in handshake["connection_info"].items()
            if k == "ip" or k.endswith("_port")
        },
        "nanny_pid": handshake.get("nanny_pid"),
        "kernel_pid": handshake.get("kernel_pid"),
        "workdir": handshake.get("workdir"),
    }
    # The manager takes the runner over (and its connection to a login node, if any).
    manager: SlurmKernelManager = SlurmKernelManager.from_state(
        info, state, type_id=kernel_type.id, emit=emit, runner=runner, tunnels=tunnels
    )
    emit(
        "progress",
        step="registered",
        job_id=job_id,
        node=state["node"],
        message=f"Slurm job {job_id} runs on {state['node']}; waiting for the kernel",
    )
    return LaunchResult(connection_info=info, state=state, manager=manager)


async def _wait_registration(
    cli: SlurmCLI,
    endpoint: RegistrationEndpoint,
    job_id: str,
    job_dir: str,
    kc: SlurmKernelConfig,
    emit: Callable[..., None],
    registration_hint: str = "",
) -> dict[str, Any]:
    """Wait for the nanny's registration, reporting the job's queue state as it changes.

    :param registration_hint: added to the nanny's error when the kernel's own
        registration (the handshake) failed: how to turn it off for this type.
    """
    tag = f"slurm/{kc.name}"
    receive = asyncio.ensure_future(endpoint.receive())
    deadline = time.monotonic() + kc.start_timeout
    last: tuple[str, str, int | None] | None = None

    async def look() -> tuple[JobStatus | None, int | None]:
        status = await cli.status(job_id)
        pending = status is not None and status.state == "PENDING"
        return status, await cli.queue_position(job_id) if pending else None

    try:
        while True:
            # A look at the queue is a round trip (over SSH: 0.1-0.3 s on a busy login node):
            # the registration does not wait for one that is under way.
            poll = asyncio.ensure_future(look())
            try:
                await asyncio.wait({receive, poll}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not poll.done():
                    poll.cancel()
                    with contextlib.suppress(BaseException):
                        await poll
            if receive.done():
                break
            status, position = poll.result()
            if status is None or not status.active:
                state, reason = await cli.end_reason(job_id)
                where = await _tail(cli.runner, os.path.join(job_dir, JOB_LOG))
                raise LaunchError(
                    f"Slurm job {job_id} of {tag} ended before its kernel started "
                    f"(state {state or (status.state if status else 'gone')}, "
                    f"reason {reason or '?'})"
                    + (f"; the job's output: {where}" if where else "")
                    + f"; check python and setup in [slurm.{kc.name}]"
                )
            if status.state == "PENDING" and status.reason in NEVER_STARTS:
                raise LaunchError(never_starts_message(job_id, tag, kc.name, status.reason))
            if (status.state, status.reason, position) != last:
                last = (status.state, status.reason, position)
                data: dict[str, Any] = {"job_id": job_id, "state": status.state}
                if status.state == "PENDING":
                    data["reason"] = status.reason
                    data["queue_position"] = position
                    message = pending_message(job_id, status.reason, position)
                else:
                    data["node"] = status.node
                    message = f"Slurm job {job_id} is {status.state.lower()} on {status.node}"
                emit("progress", step="queued", message=message, **data)
            left = deadline - time.monotonic()
            if left <= 0:
                raise LaunchError(
                    f"Slurm job {job_id} of {tag} did not start its kernel within "
                    f"{kc.start_timeout:g} s (it was "
                    f"{', '.join(filter(None, (status.state, status.reason)))}); "
                    "it was cancelled. Raise start_timeout or choose a less busy partition"
                )
            await asyncio.wait({receive}, timeout=min(kc.poll_interval, left))
            if receive.done():
                break
    finally:
        if not receive.done():
            receive.cancel()
            with contextlib.suppress(BaseException):
                await receive
    content = receive.result()
    if "error" in content:
        error = str(content["error"])
        if registration_hint and "registration" in error:
            error += f"; {registration_hint}"
        raise LaunchError(f"the nanny of Slurm job {job_id} ({tag}) failed: {error}")
    if not isinstance(content.get("connection_info"), dict):
        raise LaunchError(f"the nanny of Slurm job {job_id} sent no connection info")
    return content


def _registration_hint(kc: SlurmKernelConfig) -> str:
    """Return how to launch *kc*'s type without the handshake its table asks for."""
    return (
        f'slurm/{kc.name} asks for it with kernel_protocol_version = "{kc.kernel_protocol_version}"'
        f" in [slurm.{kc.name}]: remove that line if the kernel does not implement the "
        "registration handshake"
    )


def pending_message(job_id: str, reason: str, position: int | None) -> str:
    """Return the progress line of a pending job: ``Slurm job 12 is pending (Resources), ...``.

    :param reason: Slurm's reason, ``""`` when there is none (then no parentheses).
    :param position: the job's place in the queue, if known.
    """
    message = f"Slurm job {job_id} is pending" + (f" ({reason})" if reason else "")
    if position is not None:
        message += f", position {position} in the queue"
    return message
