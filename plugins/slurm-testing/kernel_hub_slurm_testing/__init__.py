"""Test kit of the Slurm provider: a real one-node Slurm cluster in a temporary directory.

Used by the plugin's own tests and its benchmark; usable by anyone who tests
code on top of ``kernel-hub-slurm`` (``pip install 'kernel-hub-slurm[testing]'``,
which installs this distribution, ``kernel-hub-slurm-testing``). It needs
Debian's ``slurm-wlm`` (``munged``, ``slurmctld``, ``slurmd`` and the client
tools) and root, because ``slurmd`` starts jobs as their owner:

.. code-block:: python

    cluster = start_cluster(tmp_path)        # munged, slurmctld, slurmd; node idle
    env = cluster.env                        # {"SLURM_CONF": ...} for sbatch & co
    ...
    cluster.stop()                           # no job may be left; removes everything

In a test module, import the session fixture:
``from kernel_hub_slurm_testing import slurm_cluster_fixture  # noqa: F401``.

The cluster is private: its own munge key and socket, free ports on
127.0.0.1, and every state, spool, pid and log file under one directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The plugin door, not kernel_hub.testing: this module must import without pytest.
from kernel_hub.provider import free_ports, pid_alive

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "SlurmCluster",
    "slurm_available",
    "slurm_cluster_fixture",  # made by __getattr__ on first use (it needs pytest)
    "start_cluster",
]

#: What a cluster needs on this machine (Debian's slurm-wlm brings all of it).
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")

INSTALL_HINT = (
    "apt-get install --no-install-recommends slurm-wlm (as root; the tests start munged, "
    "slurmctld and slurmd themselves)"
)


def slurm_available() -> bool:
    """Return whether this machine can run the test cluster (programs present, root)."""
    return all(shutil.which(p) for p in PROGRAMS) and os.geteuid() == 0


def _pid_from(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class SlurmCluster:
    """A running one-node cluster; :meth:`stop` ends it and removes its directory.

    :param workdir: holds the config, munge key and socket, state, spool, pids and logs.
    :param conf: the ``slurm.conf``; client tools find it through :attr:`env`.
    :param node: the node's name (this machine's host name).
    :param cpus: the node's CPUs.
    """

    workdir: Path
    conf: Path
    node: str
    cpus: int
    partition: str = "debug"
    pids: dict[str, int] = field(default_factory=dict)
    #: Each program of :data:`PROGRAMS` by its absolute path, found when the cluster started,
    #: so that :meth:`run` works in a test that took Slurm's tools off ``PATH``.
    tools: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment variables that point Slurm's client tools at this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """Run a Slurm command against this cluster; return its stdout."""
        proc = subprocess.run(
            [self.tools.get(argv[0], argv[0]), *argv[1:]],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def jobs(self) -> list[str]:
        """Return the ids of the jobs in the queue (pending, running, completing)."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def wait_queue_empty(self, timeout: float = 60) -> list[str]:
        """Wait until no job is in the queue; return the jobs still there at the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = self.jobs()
            if not jobs or time.monotonic() > deadline:
                return jobs
            time.sleep(0.2)  # polling squeue: Slurm has no event to wait on

    def idle_cpus(self) -> int:
        """Return how many CPUs of the node are idle now."""
        out = self.run("sinfo", "-h", "-N", "-o", "%C").strip()  # allocated/idle/other/total
        return int(out.split("/")[1]) if out else 0

    def stop(self) -> list[str]:
        """Cancel what is left, stop the daemons, remove the directory; return the leftover jobs.

        Leftovers are the jobs still queued 30 s after the call (a completing job leaves).

        A test suite asserts that the returned list is empty: no kernel job may
        outlive the tests that started it.
        """
        leftovers: list[str] = []
        with contextlib.suppress(Exception):
            # A job whose kernel was just shut down may still be completing: give it time.
            leftovers = self.wait_queue_empty(30)
            if leftovers:
                self.run("scancel", *leftovers, check=False)
                self.wait_queue_empty(30)
        with contextlib.suppress(Exception):
            self.run("scontrol", "shutdown", check=False, timeout=15)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.get(name)
            if pid is None:
                continue
            deadline = time.monotonic() + 15
            while pid_alive(pid) and time.monotonic() < deadline:
                if name == "munged" or time.monotonic() > deadline - 10:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGTERM)
                time.sleep(0.1)  # a daemon's exit has no event we can wait on here
            if pid_alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return leftovers


def _conf_text(d: Path, *, node: str, cpus: int, ports: list[int], memory_mb: int) -> str:
    lines = {
        "ClusterName": "kh",
        "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        # Our own munged: its socket, not the system's /run/munge.
        "AuthInfo": f"socket={d / 'munge' / 'munge.socket'}",
        "SlurmctldPort": str(ports[0]),
        "SlurmdPort": str(ports[1]),
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        "ReturnToService": "2",
        "MpiDefault": "none",
        "SwitchType": "switch/none",
        # A job past its time limit gets SIGTERM, then SIGKILL this many seconds later.
        "KillWait": "5",
        "JobRequeue": "0",
        "StateSaveLocation": str(d / "state"),
        "SlurmdSpoolDir": str(d / "spool"),
        "SlurmctldPidFile": str(d / "run" / "slurmctld.pid"),
        "SlurmdPidFile": str(d / "run" / "slurmd.pid"),
        "SlurmctldLogFile": str(d / "log" / "slurmctld.log"),
        "SlurmdLogFile": str(d / "log" / "slurmd.log"),
    }
    text = "".join(f"{k}={v}\n" for k, v in lines.items())
    text += (
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN\n"
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
    )
    return text


def start_cluster(
    workdir: Path | None = None, *, cpus: int = 2, memory_mb: int = 1000, timeout: float = 60
) -> SlurmCluster:
    """Start munged, slurmctld and slurmd in *workdir*; return once the node is idle.

    :param workdir: an empty directory to own (default: a new temporary one).
    :param cpus: the node's CPUs (must not exceed this machine's).
    :raises RuntimeError: naming the daemon and its log when the node does not
        become idle within *timeout* seconds; nothing is left running then.
    """
    d = Path(tempfile.mkdtemp(prefix="kh-slurm-")) if workdir is None else workdir
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for sub in ("munge", "state", "spool", "run", "log"):
        (d / sub).mkdir(mode=0o700, exist_ok=True)
    key = d / "munge" / "munge.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(1024))
    node = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(_conf_text(d, node=node, cpus=cpus, ports=free_ports(2), memory_mb=memory_mb))
    tools = {p: path for p in PROGRAMS if (path := shutil.which(p))}
    cluster = SlurmCluster(workdir=d, conf=conf, node=node, cpus=cpus, tools=tools)
    env = {**os.environ, **cluster.env}
    try:
        munge = d / "munge"
        # munged, slurmctld and slurmd fork into the background once they are set up.
        commands: list[tuple[str, list[str], Path]] = [
            (
                "munged",
                [
                    "munged",
                    "--force",
                    f"--socket={munge / 'munge.socket'}",
                    f"--key-file={key}",
                    f"--log-file={munge / 'munged.log'}",
                    f"--pid-file={munge / 'munged.pid'}",
                    f"--seed-file={munge / 'munged.seed'}",
                ],
                munge / "munged.pid",
            ),
            ("slurmctld", ["slurmctld", "-f", str(conf)], d / "run" / "slurmctld.pid"),
            ("slurmd", ["slurmd", "-f", str(conf), "-N", node], d / "run" / "slurmd.pid"),
        ]
        for name, argv, pid_file in commands:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0:
                raise RuntimeError(f"{name} did not start: {proc.stderr.strip() or proc.stdout}")
            pid = _wait_for_pid(pid_file, timeout)
            if pid is None:
                raise RuntimeError(f"{name} wrote no pid file {pid_file}")
            cluster.pids[name] = pid
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = cluster.run("sinfo", "-h", "-o", "%T", check=False).strip()
            if state == "idle":
                return cluster
            time.sleep(0.2)  # polling sinfo: the node's registration has no event for us
        logs = " ".join(str(p) for p in sorted((d / "log").glob("*.log")))
        raise RuntimeError(f"the Slurm node is {state or 'unknown'!r}, not idle; see {logs}")
    except BaseException:
        cluster.stop()
        raise


def _wait_for_pid(path: Path, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _pid_from(path)
        if pid is not None:
            return pid
        time.sleep(0.05)  # the daemon writes it right after forking
    return None


def _session_cluster() -> Iterator[SlurmCluster]:
    from kernel_hub.testing import require_service

    require_service("slurm", slurm_available(), INSTALL_HINT)
    cluster = start_cluster()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # for sbatch & co. in this process and children
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        leftovers = cluster.stop()
    assert not leftovers, f"Slurm jobs outlived the tests: {leftovers}"


def __getattr__(name: str) -> Any:
    """Build ``slurm_cluster_fixture`` on first use, so that importing this module needs no pytest.

    ``slurm_cluster_fixture`` is a session fixture: a running :class:`SlurmCluster`,
    ``SLURM_CONF`` set for the session; at the end no job may be left in the
    queue. Skips (fails in CI) without Slurm. ``start_cluster`` and
    :class:`SlurmCluster` work without pytest.
    """
    if name == "slurm_cluster_fixture":
        import pytest

        fixture = pytest.fixture(scope="session", name="slurm_cluster")(_session_cluster)
        globals()[name] = fixture
        return fixture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
