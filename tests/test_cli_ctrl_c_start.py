"""Ctrl-C while ``kernel-hub launch`` starts a kernel ends the start at once (issue #22 item 3).

It was ignored until the start timeout ran out. Now, as in ``kernel-hub run``, the
start is undone (kernel, nanny, connection and log files) and the command exits
with 130. Each test runs ``kernel-hub`` as a real subprocess and sends it a real
SIGINT; its kernel never becomes ready.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kernel_hub.testing import pid_alive, processes_with_env, wait_pid_gone

CLI = [sys.executable, "-m", "kernel_hub"]
#: Far above what any step here needs: a command that is still starting then is the bug.
START_TIMEOUT = 600
#: Seconds a command may take to exit after Ctrl-C on a loaded machine (before: START_TIMEOUT).
EXIT_BOUND = 60

#: The kernel: tells the test it runs (its pid, through a FIFO), prints a line, never answers.
NEVER_READY = (
    "import os, sys, time\n"
    "print('hello from a kernel that never answers', flush=True)\n"
    "with open(sys.argv[1], 'w') as fifo:\n"
    "    fifo.write(f'{os.getpid()}\\n')\n"
    "time.sleep(600)\n"
)


class Launch:
    """``kernel-hub launch spec/never`` in private dirs; every process it starts is marked."""

    def __init__(self, root: Path, *, nanny: bool) -> None:
        self.root = root
        self.marker = f"KH_CTRL_C_TEST={os.getpid()}-{time.monotonic_ns()}"
        self.runtime = root / "runtime"
        self.tmp = root / "tmp"  # a local nanny makes its work dir here
        self.fifo = root / "kernel-up"
        spec = root / "share" / "kernels" / "never"
        for d in (self.runtime, self.tmp, spec):
            d.mkdir(parents=True)
        os.mkfifo(self.fifo)
        argv = [sys.executable, "-c", NEVER_READY, str(self.fifo), "{connection_file}"]
        (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "never"}))
        name, value = self.marker.split("=")
        env = {
            **os.environ,
            name: value,
            "JUPYTER_PATH": str(root / "share"),
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "TMPDIR": str(self.tmp),
        }
        command = [*CLI, "launch", "spec/never", "--start-timeout", str(START_TIMEOUT)]
        self.proc = subprocess.Popen(
            [*command, *(["--nanny"] if nanny else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        # Opened now, without blocking, so that the kernel's open for writing never blocks.
        self._fifo_fd = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)

    def read_stderr_until(self, text: str) -> str:
        assert self.proc.stderr is not None
        seen = []
        for line in self.proc.stderr:  # the test's timeout bounds this
            seen.append(line)
            if text in line:
                return "".join(seen)
        raise AssertionError(f"no {text!r} in {''.join(seen)!r}")

    def kernel_pid(self, timeout: float = 120.0) -> int:
        """Wait for the kernel to say it runs; return its pid."""
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([self._fifo_fd], [], [], left)[0], "no kernel"
            data += os.read(self._fifo_fd, 100)
        return int(data)

    def leftovers(self) -> list[str]:
        out = [f"process {pid}" for pid in processes_with_env(self.marker)]
        out += [f"file {p.name}" for p in self.runtime.iterdir()]
        return out + [f"nanny work dir {p.name}" for p in self.tmp.iterdir()]

    def close(self) -> None:
        os.close(self._fifo_fd)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        for pid in processes_with_env(self.marker):  # a failed test's leftovers
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def launch(tmp_path) -> Iterator[Callable[..., Launch]]:
    made: list[Launch] = []

    def start(*, nanny: bool) -> Launch:
        made.append(Launch(tmp_path, nanny=nanny))
        return made[-1]

    yield start
    for one in made:
        one.close()


@pytest.mark.integration
@pytest.mark.parametrize("nanny", [False, True], ids=["local", "nanny"])
@pytest.mark.parametrize("when", ["starting line", "kernel running"])
def test_ctrl_c_during_launch_ends_the_start_at_once_and_leaves_nothing(launch, nanny, when):
    run = launch(nanny=nanny)
    err = run.read_stderr_until("starting spec/never")
    kernel_pid = run.kernel_pid() if when == "kernel running" else None
    run.proc.send_signal(signal.SIGINT)
    try:
        status = run.proc.wait(EXIT_BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Ctrl-C was ignored: still starting after {EXIT_BOUND} s")
    assert run.proc.stderr is not None and run.proc.stdout is not None
    err += run.proc.stderr.read()
    assert status == 130, err
    assert "Traceback" not in err and "error" not in err, err
    assert run.proc.stdout.read() == ""  # no connection file was announced
    if kernel_pid is not None:
        assert wait_pid_gone(kernel_pid, 30)
    # The command cleaned up before it exited: nothing to wait for.
    assert run.leftovers() == []
    assert kernel_pid is None or not pid_alive(kernel_pid)
