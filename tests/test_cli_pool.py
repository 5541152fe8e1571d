"""``kernel-hub pool`` and ``kernel-hub run`` taking from it, as real processes (issue 26)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kernel_hub.cli._pool import (
    _address,
    launch_request,
    mismatch,
    peer_credentials,
    pool_state_dir,
)
from kernel_hub.contract.types import KernelType
from kernel_hub.lifecycle.state import StateDir
from kernel_hub.testing import pid_alive, processes_with_env, wait_gone, wait_pid_gone

CLI = [sys.executable, "-m", "kernel_hub"]
TYPE = "ipykernel/python3"
TIMEOUT = 60
PID = "import os; print(os.getpid())"
READY = re.compile(r"spare (\w+) ready \(kernel pid (\d+)\)")


class Lines:
    """Read a pipe line by line with a timeout; no line waits unseen in a buffer."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.buffer = b""

    def readline(self, timeout: float = TIMEOUT) -> str:
        """Return the next line ("" at the end), waiting up to *timeout* s for it."""
        deadline = time.monotonic() + timeout
        fd = self.stream.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                assert left > 0 and sel.select(left), f"no line on {self.stream!r} in {timeout} s"
                chunk = os.read(fd, 65536)
                if not chunk:
                    line, self.buffer = self.buffer, b""
                    return line.decode()
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode() + "\n"


class Pool:
    """A ``kernel-hub pool`` process of one test: its environment, its stderr line by line."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = uuid.uuid4().hex
        (root / "tmp").mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "KH_POOL_TEST": self.token,  # finds what this test started, nothing else
            "KERNEL_HUB_STATE_DIR": str(root / "hubs"),
            "TMPDIR": str(root / "tmp"),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr: Lines
        self.lines: list[str] = []
        self.matched: set[int] = set()
        self.socket = Path()

    @property
    def state_dir(self) -> Path:
        old = os.environ.get("KERNEL_HUB_STATE_DIR")
        os.environ["KERNEL_HUB_STATE_DIR"] = self.env["KERNEL_HUB_STATE_DIR"]
        try:
            return pool_state_dir(TYPE)
        finally:
            if old is None:
                del os.environ["KERNEL_HUB_STATE_DIR"]
            else:
                os.environ["KERNEL_HUB_STATE_DIR"] = old

    def start(self, *args: str) -> Pool:
        self.proc = self.popen(*args)
        self.stderr = Lines(self.proc.stderr)
        line = Lines(self.proc.stdout).readline()
        assert line, f"the pool exited first: {self.proc.stderr.read() if self.proc.stderr else ''}"
        self.socket = Path(line.strip())
        return self

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*CLI, "pool", TYPE, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = TIMEOUT) -> re.Match[str]:
        """Return the match of the first line of the pool's stderr not matched yet that
        matches *pattern*, reading more lines until one does (lines come in any order)."""
        assert self.proc is not None and self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        i = 0
        while True:
            while i < len(self.lines):
                found = None if i in self.matched else re.search(pattern, self.lines[i])
                if found:
                    self.matched.add(i)
                    return found
                i += 1
            line = self.stderr.readline(deadline - time.monotonic())
            assert line, "the pool ended:\n" + "".join(self.lines)
            self.lines.append(line)

    def ready_spare(self) -> int:
        """Wait for the next spare to be ready; return its kernel's pid."""
        return int(self.wait_for(READY).group(2))

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], capture_output=True, text=True, timeout=TIMEOUT, env=self.env, **kw
        )

    def run_pid(self, *args: str) -> tuple[int, str]:
        res = self.run("-v", "run", TYPE, *args, "-c", PID)
        assert res.returncode == 0, res.stderr
        return int(res.stdout.strip()), res.stderr

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(TIMEOUT)

    def records(self) -> list:
        return StateDir(self.state_dir).records()

    def cleanup(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        for pid in processes_with_env(f"KH_POOL_TEST={self.token}"):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def leftovers(self) -> list[int]:
        return processes_with_env(f"KH_POOL_TEST={self.token}")


@pytest.fixture
def pool(tmp_path):
    made = Pool(tmp_path)
    yield made
    made.cleanup()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_run_takes_the_spare_the_pool_refills_and_sigterm_ends_the_spares(pool, tmp_path):
    # A grace longer than any wait here: what ends a kernel is its owner, never its lease.
    pool.start("--size", "1", "--grace", "600")
    spare = pool.ready_spare()
    # A private place: the socket 0600 in a 0700 dir.
    assert stat.S_ISSOCK(pool.socket.stat().st_mode)
    assert oct(pool.socket.stat().st_mode & 0o777) == "0o600"
    assert oct(pool.socket.parent.stat().st_mode & 0o777) == "0o700"
    assert pool.socket.parent == pool.state_dir
    # 'ps' lists the spare as the pool's.
    (row,) = json.loads(pool.run("ps", "--json").stdout)
    assert row["status"] == "spare" and row["owner_pid"] == pool.proc.pid

    pid, log = pool.run_pid()
    assert pid == spare, log
    assert "from the pool" in log
    pool.wait_for(rf"handed spare \w+ \(kernel pid {spare}\) to pid \d+")
    # The run owned it: shut down when it ended; its record left the pool's state dir.
    assert wait_pid_gone(spare, TIMEOUT)
    refill = pool.ready_spare()
    assert refill != spare
    assert [r.kernel["state"]["kernel_pid"] for r in pool.records()] == [refill]

    # Not the pool's request: another working directory. Or --no-pool.
    other = tmp_path / "elsewhere"
    other.mkdir()
    pid, log = pool.run_pid("--cwd", str(other))
    assert pid != refill and "did not serve this run" in log and "start in" in log
    pool.wait_for(r"did not serve pid \d+: its kernels start in")
    pid, log = pool.run_pid("--no-pool")
    assert pid != refill and "pool" not in log
    assert pid_alive(refill)

    assert pool.stop() == 0
    assert wait_pid_gone(refill, TIMEOUT)
    assert not pool.socket.exists()
    assert pool.records() == []
    assert wait_gone(pool.leftovers(), TIMEOUT) == []


STUBBORN = (  # the pid is printed inside the try: a Ctrl-C after it is always caught
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        print(os.getpid(), flush=True)\n"
    "        time.sleep(600)\n"
    "    except KeyboardInterrupt:\n"
    "        print('ignored', flush=True)\n"
)


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_ctrl_c_interrupts_a_kernel_from_the_pool_and_a_second_one_ends_it(pool):
    pool.start("--grace", "600")  # the run ends its kernel, not the lease
    spare = pool.ready_spare()
    proc = subprocess.Popen(
        [*CLI, "run", TYPE, "-c", STUBBORN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=pool.env,
    )
    out = Lines(proc.stdout)
    try:
        assert int(out.readline()) == spare
        proc.send_signal(signal.SIGINT)
        assert out.readline().strip() == "ignored"  # the kernel got the interrupt
        assert pid_alive(spare) and proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert wait_pid_gone(spare, TIMEOUT)
    assert pool.stop() == 0
    assert wait_gone(pool.leftovers(), TIMEOUT) == []


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_two_runs_at_once_against_a_pool_of_one_both_get_a_kernel(pool):
    pool.start("--grace", "600")  # the runs end their kernels, not the lease
    spare = pool.ready_spare()
    runs = [
        subprocess.Popen(
            [*CLI, "-v", "run", TYPE, "-c", PID],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=pool.env,
        )
        for _ in range(2)
    ]
    outs = [r.communicate(timeout=TIMEOUT) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    pids = [int(out.strip()) for out, _ in outs]
    assert len(set(pids)) == 2
    assert spare in pids  # one was served warm; the other started cold or got the refill
    assert sum("from the pool" in err for _, err in outs) >= 1
    assert wait_gone(pids, TIMEOUT) == []
    assert pool.stop() == 0
    assert wait_gone(pool.leftovers(), TIMEOUT) == []
    assert pool.records() == []


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_sigkill_of_the_pool_leaves_spares_that_end_after_the_grace(pool):
    pool.start("--size", "2", "--grace", "3")
    spares = [pool.ready_spare(), pool.ready_spare()]
    nannies = [r.kernel["state"]["nanny_pid"] for r in pool.records()]
    assert len(nannies) == 2
    pool.proc.kill()
    pool.proc.wait(TIMEOUT)
    # The nannies' leases end the spares; the reaper removes the socket at once and its
    # expire program the records (which hold the keys) after the grace.
    assert wait_gone(spares + nannies, TIMEOUT) == []
    deadline = time.monotonic() + TIMEOUT
    while (pool.records() or pool.socket.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling the outcome of detached processes, bounded
    assert pool.records() == []
    assert not pool.socket.exists()
    assert not [p for p in (pool.root / "tmp").iterdir() if p.name.startswith("kernel-hub-nanny")]
    assert wait_gone(pool.leftovers(), TIMEOUT) == []


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_one_pool_per_type_and_another_user_is_refused(pool, tmp_path):
    pool.start()
    spare = pool.ready_spare()
    second = pool.popen()
    out, err = (b.decode() for b in second.communicate(timeout=TIMEOUT))
    assert second.returncode == 2, err
    assert f"a pool for {TYPE} is already serving (pid {pool.proc.pid})" in err

    # Even with the dir and the socket opened to everyone, another uid is refused.
    os.chmod(pool.state_dir, 0o711)
    os.chmod(pool.socket, 0o666)
    dirfd = os.open(pool.state_dir, os.O_PATH | os.O_DIRECTORY)
    try:
        script = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"s.connect('/proc/self/fd/{dirfd}/{pool.socket.name}')\n"
            "try:\n"
            '    s.sendall(b\'{"op": "take", "request": {}}\\n\')\n'
            "    print(repr(s.recv(65536)))\n"
            "except OSError:\n"
            "    print('closed')\n"
        )
        res = subprocess.run(
            ["/usr/bin/python3", "-I", "-S", "-c", script],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            user=65534,
            group=65534,
            pass_fds=[dirfd],
            cwd="/",
        )
    finally:
        os.close(dirfd)
    assert res.returncode == 0 and res.stdout in ("b''\n", "closed\n"), res
    pool.wait_for(r"refused a connection from uid 65534")
    assert pid_alive(spare) and len(pool.records()) == 1
    assert pool.stop() == 0
    assert wait_gone(pool.leftovers(), TIMEOUT) == []


@pytest.mark.integration
def test_a_stale_socket_is_ignored_and_removed(pool):
    path = pool.state_dir / ".pool.sock"
    path.parent.mkdir(parents=True, mode=0o700)
    with socket.socket(socket.AF_UNIX) as s, _address(path) as address:
        s.bind(address)  # closed without listening, and left behind: a pool killed outright
    assert stat.S_ISSOCK(path.stat().st_mode)
    res = pool.run("-v", "run", TYPE, "-c", "print(6*7)")
    assert (res.returncode, res.stdout) == (0, "42\n"), res.stderr
    assert "stale pool socket" in res.stderr
    assert not path.exists()
    assert wait_gone(pool.leftovers(), TIMEOUT) == []


def test_a_pool_whose_first_kernel_cannot_start_exits_with_the_error(pool, tmp_path):
    spec = tmp_path / "share" / "kernels" / "failing"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-c", "print('boom'); raise SystemExit(1)", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "failing"}))
    proc = subprocess.run(
        [*CLI, "pool", "spec/failing"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**pool.env, "JUPYTER_PATH": str(tmp_path / "share")},
    )
    assert proc.returncode == 3, proc.stderr
    assert "kernel-hub: error: the pool's first kernel did not start: kernel spec/failing" in (
        proc.stderr
    )
    assert "  | boom" in proc.stderr
    socket_file = Path(proc.stdout.strip())
    assert socket_file.name == ".pool.sock" and not socket_file.exists()
    assert wait_gone(pool.leftovers(), TIMEOUT) == []


# ---- the pure parts: the request both sides compare, the peer's credentials ----


def _request(**over):
    kt = KernelType(provider="ipykernel", name="python3", argv=("python", "-m", "ipykernel"))
    req = launch_request(kt, plugin="ipykernel", cwd="/", transport_encryption="auto")
    return {**req, **over}


def test_the_request_rule():
    mine = _request()
    assert mismatch(mine, dict(mine)) == ""
    assert "not in /tmp" in mismatch(mine, _request(cwd="/tmp"))
    other_env = _request(env={**mine["env"], "KH_X": "1"})
    assert "environment differs (KH_X)" in mismatch(mine, other_env)
    assert "defined differently" in mismatch(mine, _request(type="0" * 16))
    assert "serves ipykernel/python3" in mismatch(mine, _request(type_id="spec/python3"))
    assert "transport encryption" in mismatch(mine, _request(transport_encryption="disabled"))
    # What every shell sets per directory or command is not compared; values are digests.
    os.environ["OLDPWD"] = "/somewhere/else"
    try:
        assert "OLDPWD" not in _request()["env"]
    finally:
        del os.environ["OLDPWD"]
    assert all(len(v) == 16 for v in mine["env"].values())
    assert os.environ.get("PATH", "") not in mine["env"].values()


def test_peer_credentials_name_the_process_at_the_other_end():
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_credentials(a) == (os.getpid(), os.getuid())


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_the_pool_size_comes_from_the_config_when_not_given(pool, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(f'[pool."{TYPE}"]\nsize = 2\n')
    pool.env["KERNEL_HUB_CONFIG"] = str(config)
    pool.start("--grace", "600")
    pool.wait_for(r"serving \S+ \(size 2\)")
    first, second = pool.ready_spare(), pool.ready_spare()
    assert first != second
    assert pool.stop() == 0
    assert wait_gone([first, second], TIMEOUT) == []
