"""Fixtures of the SSH plugin's tests: a real OpenSSH sshd on loopback and a "remote" Python.

The remote side is this same machine, reached through sshd, so the suite also
checks that no remote nanny or kernel outlives it: every such process runs
the remote venv's python, which nothing else uses.
"""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kernel_hub_ssh_testing import (
    SSHD,
    SSHServer,
    make_remote_python,
    processes_running,
    start_sshd,
)

from kernel_hub.testing import require_service


@pytest.fixture(scope="session")
def ssh_workdir() -> Iterator[Path]:
    """One private temporary directory for the sshd, its keys and the remote venvs."""
    with tempfile.TemporaryDirectory(prefix="kh-ssh-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="session")
def sshd(ssh_workdir: Path) -> Iterator[SSHServer]:
    """A real sshd on 127.0.0.1:<free port>, with a temp host key, user key and known_hosts."""
    require_service(
        "sshd",
        os.path.exists(SSHD),
        "apt-get install openssh-server (the tests start /usr/sbin/sshd themselves)",
    )
    server = start_sshd(ssh_workdir / "sshd")
    try:
        yield server
    finally:
        server.stop()
    # The session processes are gone with sshd; nothing may listen on its port any more.
    assert not [p for p, _ in processes_running(str(server.workdir / "sshd_config"))]


@pytest.fixture(scope="session")
def remote_python(ssh_workdir: Path) -> Iterator[Path]:
    """The "remote" Python: a venv with only ipykernel (not kernel_hub).

    At the end of the session no process of it (nanny, kernel) may still run.
    """
    python = make_remote_python(ssh_workdir / "remote-venv")
    yield python
    leftovers = processes_running(str(python.parent.parent))
    for pid, _ in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"remote nannies or kernels outlived the suite: {leftovers}"


@pytest.fixture(scope="session")
def python_without_ipykernel(ssh_workdir: Path) -> Path:
    """A remote Python that has pyzmq but not ipykernel."""
    return make_remote_python(ssh_workdir / "bare-venv", packages=("pyzmq",))


@pytest.fixture(scope="session")
def xeus_python(ssh_workdir: Path) -> Iterator[Path]:
    """A "remote" Python with xeus-python 0.19 (a kernel with the registration handshake)
    and pyzmq (for the nanny), and neither ipykernel nor kernel_hub.

    At the end of the session no process of it (nanny, kernel) may still run.
    """
    python = make_remote_python(
        ssh_workdir / "xeus-venv", packages=("pyzmq", "xeus-python~=0.19.0")
    )
    yield python
    leftovers = processes_running(str(python.parent.parent))
    for pid, _ in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"remote nannies or kernels outlived the suite: {leftovers}"
