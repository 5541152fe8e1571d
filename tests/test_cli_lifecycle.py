"""``kernel-hub launch`` as a real subprocess: lifecycle lines, restarts, ``--no-restart``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel_hub.client import BlockingKernelClient
from kernel_hub.testing import PipedConsole

pytestmark = [pytest.mark.integration]

CLI = [sys.executable, "-m", "kernel_hub"]


@contextlib.contextmanager
def launch(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Run ``kernel-hub launch --json ARGS``; kill it (and its kernel) if the test fails."""
    proc = subprocess.Popen(
        [*CLI, "launch", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def read_until(stream, word: str) -> list[str]:
    """Return the lines of *stream* up to the first starting with *word* (blocks; the test
    timeout bounds it)."""
    lines = []
    for line in stream:
        lines.append(line.rstrip("\n"))
        if line.startswith(word):
            return lines
    raise AssertionError(f"no {word!r} line; got {lines}")


def test_launch_restarts_a_killed_kernel_and_prints_each_event():
    with launch() as proc:
        first = json.loads(proc.stdout.readline())
        path = Path(first["connection_file"])
        lines = read_until(proc.stderr, "ready")
        assert lines[0].startswith(f"starting ipykernel/python3 {first['kernel_id'][:8]}")
        os.kill(first["state"]["pid"], signal.SIGKILL)
        lines = read_until(proc.stderr, "restarted")
        assert [line.split()[0] for line in lines if not line.startswith("kernel ")] == [
            "died",
            "restarting",
            "restarted",
        ]
        assert "exit_status=-9" in lines[-3] and "attempt=1" in lines[-2]
        # The new kernel's info is printed again and the connection file is rewritten.
        second = json.loads(proc.stdout.readline())
        assert second["kernel_id"] == first["kernel_id"]
        assert second["state"]["pid"] != first["state"]["pid"]
        assert json.loads(path.read_text())["shell_port"] == second["connection_info"]["shell_port"]
        with BlockingKernelClient(second["connection_info"]) as client:
            assert client.execute("1+1", timeout=60).content["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert read_until(proc.stderr, "shutdown")[-1].startswith("shutdown ipykernel/python3")
        assert not path.exists()


def test_launch_no_restart_exits_when_the_kernel_dies():
    with launch("--no-restart") as proc:
        info = json.loads(proc.stdout.readline())
        os.kill(info["state"]["pid"], signal.SIGKILL)
        assert proc.wait(30) == 1
        err = proc.stderr.read()
        assert "died ipykernel/python3" in err and "exit_status=-9" in err
        assert "restarting" not in err
        assert not Path(info["connection_file"]).exists()


@pytest.mark.timeout(300)
def test_jupyter_console_on_the_launch_file_goes_on_after_a_restart():
    """``jupyter console --existing FILE`` reads the file once; the restarted kernel is
    reachable with what it read: the same ports and key, the file unchanged."""
    with launch() as proc:
        first = json.loads(proc.stdout.readline())
        path = first["connection_file"]
        read_until(proc.stderr, "ready")
        # include_other_output: its poll task reads IOPub every 0.5 s. Without it, jupyter
        # console 6.6 waits in run_cell for an IOPub wake-up that, after its sockets
        # reconnected to a new process, does not come (the messages are there: a plain
        # jupyter_client client on the same file reads them; see the restarter tests).
        console = PipedConsole(
            [
                *[sys.executable, "-m", "jupyter_console", "--existing", path],
                *["--simple-prompt", "--ZMQTerminalInteractiveShell.include_other_output=True"],
            ],
            os.environ,
        )
        try:
            console.send("print(6*7)")
            at = console.wait_for("42\n")
            os.kill(first["state"]["pid"], signal.SIGKILL)
            read_until(proc.stderr, "restarted")
            second = json.loads(proc.stdout.readline())
            assert second["state"]["pid"] != first["state"]["pid"]
            assert second["connection_info"] == first["connection_info"]
            on_disk = json.loads(Path(path).read_text())
            assert {k: on_disk[k] for k in first["connection_info"]} == first["connection_info"]
            # jupyter console skips waiting for a reply while its heartbeat thread still
            # counts the kernel as dead (it beats once a second): until it beats again,
            # a cell's output is shown only with the next cell. So: one cell, then cells
            # until the new kernel's answer appears (each a wait on the output, bounded).
            expected = f"pid {second['state']['pid']}\n"
            for _ in range(12):
                console.send("import os; print('pid', os.getpid())")
                if console.seen(expected, at, timeout=5) >= 0:
                    break
            console.wait_for(expected, at, timeout=5)
        finally:
            console.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
