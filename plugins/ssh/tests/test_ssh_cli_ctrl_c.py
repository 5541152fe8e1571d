"""Ctrl-C during ``kernel-hub run ssh/<name>``'s start leaves nothing on the remote host.

Issue #22 item 4: 2 of 7 tries left the remote nanny and kernel running until
their lease ended them (minutes), once with "could not stop remote process ...:
ChannelOpenError('SSH connection closed')". A real sshd on loopback; the CLI is a
subprocess, sent a real SIGINT after each progress line it prints. The lease is
made far longer than the bound here, so it cannot be what ends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from kernel_hub.testing import processes_with_env

pytestmark = [pytest.mark.ssh, pytest.mark.integration]

CLI = [sys.executable, "-m", "kernel_hub"]
#: Seconds after the command's exit within which nothing of it may be left remotely
#: (the lease below is far longer).
GONE = 30.0
LEASE = 3600


def remote_leftovers(marker: str) -> list[int]:
    """The nanny (its --env names the marker) and the kernel (its environment has it)."""
    from kernel_hub_ssh_testing import processes_running

    key, value = marker.split("=")
    by_args = [pid for pid, _ in processes_running(json.dumps({key: value})[1:-1])]
    return sorted(set(by_args) | set(processes_with_env(marker)))


#: Kill points: right after a progress line, or some time into the nanny's start (where the
#: remote nanny was left: its shell's pid read or not, its handshake relayed or not), or the
#: moment the remote nanny process appears.
POINTS = [
    ("connecting to", 0.0),
    *(("starting the nanny", tenths / 10) for tenths in range(8)),
    ("forwarding", 0.0),
    ("waiting for the kernel", 0.0),
    ("remote nanny process", 0.0),
]


@pytest.mark.parametrize(
    ("after", "later"), POINTS, ids=[f"{a}+{t:.1f}s" if t else a for a, t in POINTS]
)
def test_ctrl_c_during_an_ssh_start_leaves_no_remote_process(
    sshd, remote_python, tmp_path, after, later
):
    from kernel_hub_ssh_testing import wait_gone

    key, value = "KH_SSH_CTRL_C", uuid.uuid4().hex
    marker = f"{key}={value}"
    table = sshd.kernel_table(python=str(remote_python), connect_timeout=60, lease=LEASE)
    lines = ["[ssh.box]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    lines.append(f'env = {{ {key} = "{value}" }}')
    config = tmp_path / "kh.toml"
    config.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(
        [*CLI, "run", "ssh/box", "-c", "import time; time.sleep(600)"],
        env={**os.environ, "KERNEL_HUB_CONFIG": str(config)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        seen = []
        if after == "remote nanny process":  # the moment it appears, whatever was printed
            deadline = time.monotonic() + 120
            while not remote_leftovers(marker):
                assert proc.poll() is None and time.monotonic() < deadline, "no remote nanny"
                time.sleep(0.005)  # another machine's process: nothing to wait on
        else:
            for line in proc.stderr:  # the test's timeout bounds this
                seen.append(line)
                if line.startswith(f"kernel-hub: {after}"):
                    break
            else:
                pytest.fail(f"no {after!r} line: {''.join(seen)}")
        # Not a synchronisation: it only moves the kill point along the start; the assertions
        # below hold wherever it lands (the start is 0.5-1 s on an idle machine).
        time.sleep(later)
        proc.send_signal(signal.SIGINT)
        status = proc.wait(120)  # a kernel that was up by then: its code is interrupted, 130
        err = "".join(seen) + proc.stderr.read()
        assert status == 130, err
        assert "could not stop remote process" not in err, err
        ended = time.monotonic()
        left = remote_leftovers(marker)
        assert wait_gone(left, GONE) == [], f"left on the remote host: {left}\n{err}"
        # Nothing left behind that appears late (a nanny that daemonized meanwhile).
        assert remote_leftovers(marker) == [], err
        assert time.monotonic() - ended < GONE + 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        for pid in remote_leftovers(marker):  # what a failed test left must not outlive it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
