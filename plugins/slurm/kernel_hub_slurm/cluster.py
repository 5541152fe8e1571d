"""Where Slurm's commands run, and the commands themselves (``sbatch``, ``squeue``, ``scancel``).

The seam is :class:`CommandRunner`: it runs a command where Slurm's client
tools are and manages files on the storage the compute nodes share.
:class:`LocalRunner` does both on this machine;
:class:`~kernel_hub_slurm.login.LoginRunner` does both on a login node over
SSH (the ssh plugin's connection: commands on it, files over SFTP), chosen by
a table's ``login`` field. Nothing else in this plugin knows which, because
everything goes through :class:`SlurmCLI`, which only knows a runner.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kernel_hub.provider import KernelHubError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "ACTIVE_STATES",
    "CommandResult",
    "CommandRunner",
    "JobStatus",
    "LocalRunner",
    "SlurmCLI",
    "SlurmUnavailable",
]

#: Job states in which the job still holds (or waits for) its allocation.
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "RESIZING", "REQUEUED"}
)


class SlurmUnavailable(KernelHubError):
    """Slurm's tools are missing or its controller does not answer."""


@dataclass(frozen=True)
class CommandResult:
    """What a command printed and how it ended."""

    returncode: int
    stdout: str
    stderr: str

    def error_line(self) -> str:
        """Return the most telling line of stderr (Slurm's own message), or stdout's."""
        lines = [ln.strip() for ln in (self.stderr or self.stdout).splitlines() if ln.strip()]
        if not lines:
            return f"exit status {self.returncode}"
        # sbatch prints "error: <detail>" then "error: Batch job submission failed: <reason>".
        return "; ".join(ln.removeprefix("sbatch: ").removeprefix("error: ") for ln in lines[-2:])


class CommandRunner(Protocol):
    """Run Slurm's commands and handle job files where they are (this machine, a login node)."""

    #: Where, for messages: ``"this machine"``, ``"login.example.org"``.
    label: str

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 30.0
    ) -> CommandResult:
        """Run *argv*; raise :class:`SlurmUnavailable` when the program is missing."""
        ...

    async def expand_user(self, path: str) -> str:
        """Return *path* with a leading ``~`` replaced by the home directory where the files are."""
        ...

    async def make_private_dir(self, base: str, prefix: str) -> str:
        """Create a new 0700 directory under *base* (made 0700 if missing); return its path."""
        ...

    async def write_private_file(self, path: str, data: bytes) -> None:
        """Create *path* with mode 0600 (it must not exist) holding *data*."""
        ...

    async def remove_tree(self, path: str) -> None:
        """Remove *path* and everything under it; a missing path is not an error."""
        ...

    async def list_dir(self, path: str) -> list[str]:
        """Return the names in directory *path* (empty if it does not exist)."""
        ...

    async def read_file(self, path: str) -> bytes | None:
        """Return the contents of *path*, or ``None`` if it cannot be read."""
        ...

    def to_state(self) -> dict[str, Any]:
        """Return a JSON-able description from which a re-attaching manager rebuilds it."""
        ...

    async def close(self) -> None:
        """Let go of what the runner holds (a connection); idempotent."""
        ...


class LocalRunner:
    """Slurm's client tools on this machine, and the shared storage mounted here.

    :param env: extra environment for the commands (e.g. ``SLURM_CONF``).
    """

    label = "this machine"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})

    def __repr__(self) -> str:
        return "<LocalRunner>"

    async def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float = 30.0
    ) -> CommandResult:
        if shutil.which(argv[0], path=self.env.get("PATH", os.environ.get("PATH"))) is None:
            raise SlurmUnavailable(
                f"Slurm's {argv[0]!r} is not on PATH on {self.label}: install Slurm's client "
                "tools (Debian: apt-get install slurm-client) or add them to PATH"
            )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **self.env} if self.env else None,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(input)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return CommandResult(
            proc.returncode, out.decode(errors="replace"), err.decode("utf-8", "replace")
        )

    async def expand_user(self, path: str) -> str:
        # expanduser reads $HOME (or the password database): no file of ours
        return os.path.expanduser(path)  # noqa: ASYNC240

    async def make_private_dir(self, base: str, prefix: str) -> str:
        import tempfile

        os.makedirs(base, mode=0o700, exist_ok=True)
        return tempfile.mkdtemp(prefix=prefix, dir=base)  # mode 0700

    async def write_private_file(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    async def remove_tree(self, path: str) -> None:
        await asyncio.to_thread(shutil.rmtree, path, True)

    async def list_dir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except OSError:
            return []

    async def read_file(self, path: str) -> bytes | None:
        def read() -> bytes | None:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError:
                return None

        return await asyncio.to_thread(read)

    def to_state(self) -> dict[str, Any]:
        return {"kind": "local", "env": dict(self.env)}

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class JobStatus:
    """One job as ``squeue`` sees it."""

    job_id: str
    state: str
    #: Why a pending job waits (``Resources``, ``Priority``); ``""`` when Slurm gives none.
    reason: str
    node: str

    @property
    def active(self) -> bool:
        """Whether the job still runs or waits to."""
        return self.state in ACTIVE_STATES


_CONTROLLER_DOWN = re.compile(r"unable to contact slurm controller|connection refused", re.I)


class SlurmCLI:
    """Slurm's command-line tools, run through a :class:`CommandRunner`.

    Debian's Slurm is 22.05 and pyslurm targets newer releases, so this drives
    the tools and parses their ``-o``-formatted output.
    """

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner

    def __repr__(self) -> str:
        return f"<SlurmCLI on {self.runner.label}>"

    async def _run(self, *argv: str, input: bytes | None = None) -> CommandResult:
        result = await self.runner.run(argv, input=input)
        if result.returncode != 0 and _CONTROLLER_DOWN.search(result.stderr):
            raise SlurmUnavailable(
                f"Slurm's controller does not answer {argv[0]} on {self.runner.label} "
                f"({result.error_line()}); is slurmctld running and SLURM_CONF right? "
                "Check with: scontrol ping"
            )
        return result

    async def sbatch(self, script: str, options: Sequence[str]) -> str:
        """Submit *script* (read by sbatch from stdin); return the job id.

        :raises KernelHubError: quoting Slurm's message when sbatch rejects the job.
        """
        result = await self._run("sbatch", "--parsable", *options, input=script.encode())
        if result.returncode != 0:
            raise KernelHubError(f"sbatch rejected the job: {result.error_line()}")
        # --parsable prints "<id>" or "<id>;<cluster>".
        return result.stdout.strip().split(";")[0]

    async def status(self, job_id: str) -> JobStatus | None:
        """Return the job's state (finished ones too, while Slurm remembers them), or ``None``."""
        result = await self._run("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T|%r|%N")
        if result.returncode != 0:
            if "invalid job id" in result.stderr.lower():
                return None  # finished long enough ago that the controller forgot it
            raise KernelHubError(f"squeue failed for job {job_id}: {result.error_line()}")
        for line in result.stdout.splitlines():
            fields = line.strip().split("|")
            if len(fields) == 4 and fields[0] == job_id:
                # squeue's %r prints "None" when a job waits for no particular reason.
                reason = "" if fields[2] == "None" else fields[2]
                return JobStatus(job_id, fields[1], reason, fields[3])
        return None

    async def queued_jobs(self) -> set[str] | None:
        """Return the ids of every job in the queue (pending to completing), or ``None``."""
        result = await self._run("squeue", "-h", "-o", "%i")
        return set(result.stdout.split()) if result.returncode == 0 else None

    async def queue_position(self, job_id: str) -> int | None:
        """Return the job's 1-based place among the pending jobs (by priority), if pending."""
        result = await self._run("squeue", "-h", "-t", "PENDING", "--sort=-p,i", "-o", "%i")
        if result.returncode != 0:
            return None
        ids = result.stdout.split()
        return ids.index(job_id) + 1 if job_id in ids else None

    async def end_reason(self, job_id: str) -> tuple[str, str]:
        """Return ``(JobState, Reason)`` from ``scontrol show job`` (``("", "")`` if unknown)."""
        result = await self._run("scontrol", "show", "-o", "job", job_id)
        state = re.search(r"\bJobState=(\S+)", result.stdout)
        reason = re.search(r"\bReason=(\S+)", result.stdout)
        return (state.group(1) if state else "", reason.group(1) if reason else "")

    async def cancel(self, job_id: str, *, signal: str | None = None, batch: bool = False) -> bool:
        """``scancel`` the job (or send it *signal*); return whether Slurm accepted it."""
        argv = ["scancel"]
        if signal is not None:
            argv.append(f"--signal={signal}")
        if batch:
            argv.append("--batch")
        result = await self._run(*argv, job_id)
        return result.returncode == 0 and "error" not in result.stderr.lower()
