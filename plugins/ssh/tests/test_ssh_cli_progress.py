"""``kernel-hub run ssh/<name>`` shows the SSH plugin's progress events (issue 16, item 12).

A real sshd on loopback; the CLI is a subprocess. On a pipe each step is one
plain line; on a terminal a status line is redrawn and erased.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ssh, pytest.mark.integration]

CLI = [sys.executable, "-m", "kernel_hub"]


def toml_table(name: str, table: dict) -> str:
    lines = [f"[ssh.{name}]"]
    for key, value in table.items():
        lines.append(f"{key} = {json.dumps(value)}")  # strings, numbers, booleans: JSON is TOML
    return "\n".join(lines) + "\n"


@pytest.fixture
def env(sshd, remote_python, tmp_path):
    config = tmp_path / "kh.toml"
    table = sshd.kernel_table(python=str(remote_python), connect_timeout=15)
    config.write_text(toml_table("box", table))
    return {**os.environ, "KERNEL_HUB_CONFIG": str(config)}


def test_progress_lines_on_a_pipe(env):
    res = subprocess.run(
        [*CLI, "run", "ssh/box", "-c", "print(6*7)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "42\n"
    lines = res.stderr.splitlines()
    assert any(line.startswith("kernel-hub: connecting to ") for line in lines), lines
    assert any(line.startswith("kernel-hub: forwarding ") for line in lines), lines
    assert "\r" not in res.stderr


def test_progress_line_on_a_terminal(env):
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*CLI, "run", "ssh/box", "-c", "print(6*7)"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
        os.close(follower)
        follower = -1
        out, _ = proc.communicate(timeout=120)
        seen = b""
        while select.select([leader], [], [], 0)[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO once the last writer has gone
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0 and out == "42\n"
    text = seen.decode()
    assert "\r\x1b[2K" in text and "connecting to " in text and "forwarding " in text
    assert "\n" not in text.replace("\r\n", "")  # one line, redrawn, never scrolled
    assert text.endswith("\r\x1b[2K")


def test_run_prints_no_dependency_warning_or_asyncssh_line(env):
    """Issue 20: with cryptography 51 (the lock's), a run printed five DSA warnings."""
    res = subprocess.run(
        [*CLI, "run", "ssh/box", "-c", "print(6*7)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "42\n"
    # Only kernel_hub's own progress lines: no warning, no asyncssh "[conn=0] ..." line.
    others = [line for line in res.stderr.splitlines() if not line.startswith("kernel-hub: ")]
    assert others == [], res.stderr
