"""``kernel-hub launch --nanny`` and ``kernel-hub attach``, as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_hub.testing import pid_alive, wait_pid_gone

CLI = [sys.executable, "-m", "kernel_hub"]
TIMEOUT = 60

BUSY = "import time\nprint('go', flush=True)\nwhile True: time.sleep(0.01)"


def attach(*args, **kw):
    return subprocess.run(
        [*CLI, "attach", *args], capture_output=True, text=True, timeout=TIMEOUT, **kw
    )


def readline(stream, timeout=TIMEOUT):
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        assert sel.select(timeout), f"nothing on {stream!r} within {timeout} s"
    return stream.readline()


@pytest.fixture
def launched(tmp_path):
    """``kernel-hub launch ipykernel/python3 --nanny --json``; stopped, and checked, after."""
    log = open(tmp_path / "launch.log", "w")  # closed in teardown
    proc = subprocess.Popen(
        [*CLI, "launch", "ipykernel/python3", "--nanny", "--json"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    info = {}
    try:
        info = json.loads(readline(proc.stdout))
        yield proc, info, tmp_path / "launch.log"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        log.close()
        state = info.get("state", {})
        for pid in (state.get("nanny_pid"), state.get("kernel_pid")):
            if pid and not wait_pid_gone(pid, TIMEOUT):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                pytest.fail(f"process {pid} of 'launch --nanny' outlived its test")


@pytest.mark.integration
def test_launch_nanny_then_attach_run_interrupt_and_kill_from_other_processes(launched, tmp_path):
    proc, info, log = launched
    conn = info["connection_info"]
    assert {"nanny_control_port", "nanny_events_port"} <= set(conn)
    assert info["type_id"] == "ipykernel/python3" and info["state"]["nanny"] is True
    path = Path(info["connection_file"])
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    on_disk = json.loads(path.read_text())
    # The launcher's record (who started the kernel, when) lets 'attach' tell a stale file.
    assert on_disk.pop("kernel_hub")["launcher_pid"] == proc.pid
    assert on_disk == conn

    res = attach(str(path), "-c", "print(6*7)")
    assert (res.returncode, res.stdout) == (0, "42\n"), res.stderr
    # the --json output works as well (and it is what hub.attach takes)
    saved = tmp_path / "launch.json"
    saved.write_text(json.dumps(info))
    res = attach(str(saved))
    assert res.returncode == 0 and json.loads(res.stdout)["status"] == "ok"

    busy = subprocess.Popen(
        [*CLI, "attach", str(path), "-c", BUSY],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert readline(busy.stdout) == "go\n"
        res = attach(str(path), "--interrupt")
        assert res.returncode == 0, res.stderr
        assert busy.wait(TIMEOUT) == 1
        assert "KeyboardInterrupt" in busy.stderr.read()
    finally:
        if busy.poll() is None:
            busy.kill()
            busy.wait()
        busy.stdout.close()
        busy.stderr.close()

    kernel_pid = info["state"]["kernel_pid"]
    res = attach(str(path), "--kill")
    assert res.returncode == 0 and "exit status -9" in res.stderr
    # the launcher sees the death through the nanny, and cleans up after it
    assert proc.wait(TIMEOUT) == 1
    assert "died (exit status -9)" in log.read_text()
    assert not pid_alive(kernel_pid)
    assert wait_pid_gone(info["state"]["nanny_pid"], TIMEOUT)
    assert not path.exists()


@pytest.mark.integration
def test_launch_nanny_sigterm_shuts_the_kernel_down_through_the_nanny(launched):
    proc, info, _ = launched
    path = Path(info["connection_file"])
    res = attach(str(path), "-c", "import os; print(os.getppid())")
    assert res.stdout.strip() == str(info["state"]["nanny_pid"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0
    assert wait_pid_gone(info["state"]["nanny_pid"], TIMEOUT)
    assert wait_pid_gone(info["state"]["kernel_pid"], TIMEOUT)
    assert not path.exists()
    assert not os.path.exists(info["state"]["workdir"])


def test_attach_to_a_missing_file_is_a_clear_error(tmp_path):
    res = attach(str(tmp_path / "nope.json"), "-c", "1")
    assert res.returncode == 2
    assert "cannot read" in res.stderr and "nope.json" in res.stderr


def test_kill_needs_a_nanny(tmp_path):
    from kernel_hub.wire.connection import new_connection_info, write_connection_file

    path = write_connection_file(new_connection_info(), tmp_path / "plain.json")
    res = attach(str(path), "--kill")
    assert res.returncode == 2 and "no nanny ports" in res.stderr
