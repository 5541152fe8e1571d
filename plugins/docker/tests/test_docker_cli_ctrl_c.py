"""Ctrl-C while ``kernel-hub launch`` starts a Docker kernel (issue #22 item 3).

It was held until the kernel was up (then the kernel was shut down and the
command exited 0). Now the start ends at once, with 130, and no container of
the command is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from kernel_hub_docker.engine import get_client
from kernel_hub_docker.owner import LABEL_OWNER_PID

pytestmark = [pytest.mark.docker, pytest.mark.integration]

LABEL_TYPE = "docker/bookworm-py"  # the name in the test image's org.kernel-hub.kernel label
#: Seconds the command may take to exit after Ctrl-C on a loaded machine.
EXIT_BOUND = 60


def containers_of(pid: int) -> list[dict]:
    return list(
        get_client().api.containers(all=True, filters={"label": f"{LABEL_OWNER_PID}={pid}"})
    )


def wait_for_container(pid: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not containers_of(pid):
        assert time.monotonic() < deadline, "no container was created"
        time.sleep(0.05)  # the engine gives no event to wait on


@pytest.mark.parametrize("when", ["starting line", "container created"])
def test_ctrl_c_during_a_docker_launch_ends_it_with_130_and_leaves_no_container(
    docker_image, tmp_path, when
):
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kernel_hub", "launch", LABEL_TYPE, "--start-timeout", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)},
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        seen = []
        for line in proc.stderr:  # the test's timeout bounds this
            seen.append(line)
            if line.startswith(f"starting {LABEL_TYPE}"):
                break
        else:
            pytest.fail(f"no starting line: {''.join(seen)}")
        if when == "container created":
            wait_for_container(proc.pid)
        proc.send_signal(signal.SIGINT)
        status = proc.wait(EXIT_BOUND)
        err = "".join(seen) + proc.stderr.read()
        assert status == 130, err  # before: 0, once the kernel had come up and been shut down
        assert "ready" not in err and "Traceback" not in err, err
        assert proc.stdout.read() == ""  # no connection file was announced
        # A container whose create request was under way is removed by the command's reaper
        # when the command exits (kernel_hub_docker.reap): a bounded wait for the engine.
        deadline = time.monotonic() + 60
        while containers_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)  # the engine gives no event to wait on
        assert containers_of(proc.pid) == []
        assert list(runtime.iterdir()) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for c in containers_of(proc.pid):  # what a failed test left must not outlive it
            get_client().api.remove_container(c["Id"], force=True)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
