"""Start the nanny on the remote host over SSH and read its handshake line.

The nanny's source travels on the SSH channel's stdin and runs as
``<python> - --daemon ...``: the remote host needs nothing but a Python with
ipykernel, and no file of ours is left there. The nanny makes the
connection key and sends it back in its handshake line, inside the
encrypted channel, so the key is never on a command line on either side.

A relaunch keeps the old kernel's key: it goes first on the same stdin, one
line the remote shell reads (``read -r``) into the nanny's environment
(``KERNEL_HUB_NANNY_KEY``, which the nanny removes before starting the kernel),
then the nanny's source follows. Still never on a command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import LaunchError

from ._asyncssh import asyncssh

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .config import SSHKernelConfig
    from .connection import HostConnection

__all__ = ["kill_remote", "nanny_command", "start_nanny"]

log = logging.getLogger("kernel_hub.ssh")

#: The handshake keys every nanny prints (see docs/nanny-protocol.md).
_HANDSHAKE_KEYS = ("connection_info", "nanny_pid", "kernel_pid", "workdir")


def nanny_payload() -> str:
    """Return what the remote Python reads on stdin to run the nanny (``NANNY_BOOTSTRAP``):
    the host's compiled nanny, used where the remote Python takes the same bytecode, and
    its source (ASCII: compressed, in base64)."""
    from kernel_hub.provider import nanny_payload

    return nanny_payload().decode("ascii")


def _quote_path(path: str) -> str:
    """Quote *path* for the remote shell, letting a leading ``~`` expand to the remote home."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def nanny_command(
    python: str,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    kernel_name: str = "",
    lease: float | None = None,
    curve: str | None = None,
    secrets_on_stdin: bool = False,
    argv: Sequence[str] = (),
    registration_timeout: float | None = None,
) -> str:
    """Return the remote shell command that runs the nanny from stdin, detached.

    The remote Python runs ``NANNY_BOOTSTRAP``, which reads :func:`nanny_payload`.

    ``echo $$; exec ...`` first reports the pid the nanny will have, so that a
    start that fails half-way can still be cleaned up on the remote side.

    :param curve: the nanny's ``--curve`` (``auto``, ``required``: it judges its
        kernel itself; ``on``), or ``None`` for a plain kernel.
    :param secrets_on_stdin: the secrets the host chose (a relaunch's key, the CurveZMQ
        keypair) follow the nanny's code on stdin as one JSON line (``--secrets -``):
        never in a file, an argv or an environment.
    :param argv: the kernel's command line (``--argv``); empty: the nanny's default,
        ipykernel on *python*.
    :param registration_timeout: start the kernel with the registration handshake
        (``--registration``), giving it this many seconds to report its ports;
        ``None``: ports chosen by the nanny, as ever.
    """
    from kernel_hub.provider import NANNY_BOOTSTRAP

    args = ["-c", NANNY_BOOTSTRAP, "--daemon"]
    if argv:
        args += ["--argv", json.dumps(list(argv))]
    if registration_timeout is not None:
        args += ["--registration", "--registration-timeout", f"{registration_timeout:g}"]
    if curve is not None:
        args += ["--curve", curve]
    if kernel_name:
        args += ["--kernel-name", kernel_name]
    if env:
        args += ["--env", json.dumps(dict(env), sort_keys=True)]
    if lease is not None:
        args += ["--lease", f"{lease:g}"]
    cmd = f"{_quote_path(python)} {shlex.join(args)}"
    if cwd:
        cmd += f" --cwd {_quote_path(cwd)}"
    if secrets_on_stdin:
        cmd += " --secrets -"
    return f"echo $$; exec {cmd}"


async def kill_remote(host: HostConnection, pid: int, *, timeout: float = 10.0) -> None:
    """SIGTERM remote *pid* (the nanny then kills its kernel and removes its work dir), then KILL.

    Best effort: a host that is unreachable is logged, not raised.
    """
    # The --daemon nanny forks before its handshake: the child is the real nanny.
    script = (
        f"pkill -TERM -P {pid} 2>/dev/null; "
        f"kill -TERM {pid} 2>/dev/null || exit 0; "
        f"for i in $(seq 50); do kill -0 {pid} 2>/dev/null || exit 0; sleep 0.1; done; "
        f"kill -KILL {pid} 2>/dev/null; exit 0"
    )
    try:
        await host.run(script, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the original error
        log.warning("could not stop remote process %s on %s: %r", pid, host.target.label, exc)


def _python_missing(status: int | None, stderr: str) -> bool:
    return status == 127 or "not found" in stderr or "No such file" in stderr


async def start_nanny(
    host: HostConnection,
    kc: SSHKernelConfig,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    key: str | None = None,
    curve: str | None = None,
    curve_keys: Mapping[str, str] | None = None,
    registration: float | None = None,
    registration_hint: str = "",
) -> dict[str, Any]:
    """Start a nanny and its kernel on *host*; return the nanny's handshake (runs on the SSH loop).

    :param cwd: the remote working directory (overrides the config's).
    :param env: extra remote environment (over the config's).
    :param key: the connection key the kernel is to have (a relaunch keeps the old
        one); sent on the channel's stdin, never on a command line. Default: the
        nanny makes a fresh one.
    :param curve: the nanny's ``--curve`` (see :func:`nanny_command`); ``None``: plain.
    :param curve_keys: the CurveZMQ keypair to keep (a relaunch's); sent on stdin.
    :param registration: start the kernel with the registration handshake, giving it
        this many seconds to report its ports (the wait for the handshake line grows by
        as much); ``None``: without.
    :param registration_hint: added to the nanny's error when the kernel's registration
        failed: how to turn the handshake off for this type.
    :raises LaunchError: naming the host and the fix when the remote Python is
        missing, lacks ipykernel, or the nanny fails or does not answer within
        ``connect_timeout`` (plus *registration*); nothing is left running on the
        remote side.
    """
    label = host.target.label
    timeout = host.target.connect_timeout
    # The nanny's handshake line comes once the kernel reported its ports: the nanny's
    # own error after the registration timeout must win over ours.
    wait = timeout + registration if registration is not None else timeout
    if key is not None and (not key or any(c in key for c in "\r\n\0")):
        raise LaunchError(f"cannot relaunch ssh/{kc.name} on {label!r}: its key is malformed")
    command = nanny_command(
        kc.python,
        cwd=cwd if cwd is not None else kc.cwd,
        env={**kc.env, **(env or {})},
        kernel_name=kc.name,
        lease=kc.lease,
        curve=curve,
        secrets_on_stdin=key is not None or bool(curve_keys),
        argv=kc.argv,
        registration_timeout=registration,
    )
    conn = await host.connected(timeout)
    remote_pid: int | None = None
    process: asyncssh.SSHClientProcess[str] | None = await conn.create_process(
        command, encoding="utf-8", errors="replace"
    )
    assert process is not None
    try:
        async with asyncio.timeout(wait):
            # A shell whose python is missing exits at once and may close stdin under us.
            with contextlib.suppress(OSError, asyncssh.Error, BrokenPipeError):
                process.stdin.write(nanny_payload())
                secrets = {**(curve_keys or {}), **({"key": key} if key is not None else {})}
                if secrets:  # read by the nanny after its code: see nanny_command
                    process.stdin.write(json.dumps(secrets) + "\n")
                process.stdin.write_eof()
            first = await process.stdout.readline()
            if first.strip().isdigit():
                remote_pid = int(first)
                line = await process.stdout.readline()
            else:
                line = first
            if not line.strip():
                result = await process.wait()
                stderr = str(result.stderr or "").strip()
                if _python_missing(result.exit_status, stderr):
                    raise LaunchError(
                        f"ssh host {label!r} has no Python at {kc.python!r} ({stderr or 'exit '}"
                        f"{'' if stderr else result.exit_status}). Set 'python' in [ssh.{kc.name}] "
                        "to the remote interpreter that has ipykernel, e.g. "
                        "/opt/conda/bin/python or ~/venv/bin/python."
                    )
                raise LaunchError(
                    f"the nanny on ssh host {label!r} exited without starting the kernel "
                    f"(exit status {result.exit_status}): {stderr[-2000:] or 'no output'}"
                )
        try:
            reply = json.loads(line)
        except ValueError:
            raise LaunchError(
                f"the nanny on ssh host {label!r} answered garbage instead of its handshake: "
                f"{line[:200]!r}. Does the remote login shell print text for non-interactive "
                "sessions (e.g. in ~/.bashrc)? Make it quiet."
            ) from None
        if not isinstance(reply, dict):
            raise LaunchError(f"the nanny on ssh host {label!r} sent a malformed handshake")
        if "error" in reply:
            error = str(reply["error"])
            if registration is not None and "registration" in error and registration_hint:
                error += f"; {registration_hint}"
            raise LaunchError(f"cannot start kernel ssh/{kc.name} on {label!r}: {error}")
        missing = [k for k in _HANDSHAKE_KEYS if k not in reply]
        if missing:
            raise LaunchError(
                f"the nanny on ssh host {label!r} sent a handshake without {missing}; "
                "is the same kernel_hub version in use on both ends?"
            )
        # The handshake is in and the daemon's parent exits, closing the channel: let that
        # happen in the background instead of adding its round trip to every start.
        task = asyncio.ensure_future(_close_when_done(process))
        _closing.add(task)
        task.add_done_callback(_closing.discard)
        process = None
        return reply
    except TimeoutError:
        if remote_pid is not None:
            await kill_remote(host, remote_pid)
        within = f"connect_timeout={timeout} s"
        if registration is not None:
            within += f" + registration_timeout={registration:g} s"
        raise LaunchError(
            f"the kernel on ssh host {label!r} did not start within {within} (no handshake "
            f"from the nanny). Raise connect_timeout in [ssh.{kc.name}] if the host is just slow."
        ) from None
    except asyncio.CancelledError:
        # The host gave up (Ctrl-C). The nanny may be on its way: its first process
        # (remote_pid, perhaps not read yet) exits once it has relayed the handshake, so
        # read on to that line, which names the nanny itself, and stop that one.
        if process is not None:
            remote_pid = await _started_pid(process, remote_pid, wait)
        if remote_pid is not None:
            await kill_remote(host, remote_pid)
        raise
    except BaseException:
        if remote_pid is not None:
            await kill_remote(host, remote_pid)
        raise
    finally:
        if process is not None:
            process.close()


async def _started_pid(
    process: asyncssh.SSHClientProcess[str], remote_pid: int | None, timeout: float
) -> int | None:
    """Read the rest of an abandoned start's output; return the pid to stop.

    That is the nanny's own pid if its handshake comes (within *timeout*), else the
    pid its shell reported (``echo $$``), if any.
    """
    with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
        async with asyncio.timeout(timeout):
            while line := await process.stdout.readline():
                if remote_pid is None and line.strip().isdigit():
                    remote_pid = int(line)
                    continue
                with contextlib.suppress(ValueError, TypeError):
                    return int(json.loads(line)["nanny_pid"])
    return remote_pid


#: Channels of started nannies, closing in the background (kept so they are not collected).
_closing: set[asyncio.Task[None]] = set()


async def _close_when_done(process: asyncssh.SSHClientProcess[str]) -> None:
    with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
        async with asyncio.timeout(10.0):
            await process.wait_closed()
    process.close()
