"""kernel_hub.procs: process facts from /proc, and the nanny's self-contained twin of them."""

from __future__ import annotations

import os
import subprocess
import sys

from kernel_hub import nanny
from kernel_hub.managers.procs import pid_alive, process_group, process_start, process_token


def test_a_running_process_is_alive_and_has_a_start_time():
    me = os.getpid()
    assert pid_alive(me)
    assert process_start(me).isdigit()
    boot, _, start = process_token(me).partition("/")
    assert boot and start == process_start(me)


def test_a_zombie_counts_as_gone_and_a_reaped_pid_has_no_facts():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    assert not pid_alive(child.pid)
    child.wait()
    assert not pid_alive(child.pid)
    assert process_start(child.pid) == "" and process_token(child.pid) == ""


def test_the_nannys_twin_reads_the_same_start_time():
    # nanny.py stays one self-contained file (it is shipped to remote hosts), so it keeps
    # its own copy; this pins the two to the same answer.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for pid in (os.getpid(), child.pid, os.getppid()):
            assert nanny._process_start(pid) == process_start(pid)
    finally:
        child.kill()
        child.wait()
    assert nanny._process_start(child.pid) == process_start(child.pid) == ""


def test_process_group_of_a_running_process_and_none_for_a_zombie():
    child = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert process_group(child.pid) is None  # a zombie
    child.wait()
    assert process_group(os.getpid()) == os.getpgid(0)
