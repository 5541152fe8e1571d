"""Orphan protection: kernels of a host process that is killed with SIGKILL do not live on."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from kernel_hub.testing import pid_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A host application: launches two kernels, one with a grandchild, and a process with no
#: parent watch of its own (not every kernel is an ipykernel), reports pids, then idles.
HOST = textwrap.dedent(
    """
    import asyncio, json, sys
    from kernel_hub import KernelHub, KernelType, LaunchRequest, launch_subprocess

    SPAWN = (
        "import subprocess, sys\\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\\n"
        "print(p.pid)"
    )

    async def main():
        hub = KernelHub(config={})
        kernels = await asyncio.gather(*(hub.launch("ipykernel/python3") for _ in range(2)))
        out = []
        async with kernels[0].client() as c:
            await c.execute(SPAWN, output_hook=out.append, timeout=30)
        text = [m.content["text"] for m in out if m.header["msg_type"] == "stream"][0]
        plain = KernelType(
            provider="plain", name="sleeper",
            argv=(sys.executable, "-c", "import time; time.sleep(600)"),
        )
        other = await launch_subprocess(plain, LaunchRequest(kernel_id="plain"))
        pids = {
            "kernels": [k.manager.pid for k in kernels] + [other.state["pid"]],
            "grandchild": int(text),
        }
        print(json.dumps(pids), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def wait_gone(pids: list[int], timeout: float) -> dict[int, float]:
    """Observe *pids* until all have ended or *timeout* passes; return seconds until each ended."""
    start = time.monotonic()
    ended: dict[int, float] = {}
    while time.monotonic() - start < timeout and len(ended) < len(pids):
        for pid in pids:
            if pid not in ended and not pid_alive(pid):
                ended[pid] = time.monotonic() - start
        time.sleep(0.02)  # observation of processes we cannot wait on (not our children)
    return ended


def wait_files_gone(directory, timeout: float) -> list[str]:
    """Observe *directory* until no kernel file is left or *timeout* passes; return leftovers."""
    deadline = time.monotonic() + timeout
    while (left := sorted(p.name for p in directory.glob("kernel-*"))) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.02)
    return left


def test_kernels_of_a_killed_host_exit_within_a_few_seconds(tmp_path):
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    host = subprocess.Popen(
        [sys.executable, "-c", HOST], stdout=subprocess.PIPE, env=env, text=True
    )
    pids: list[int] = []
    try:
        line = host.stdout.readline()
        assert line, f"the host exited early with {host.wait(30)}"
        info = json.loads(line)
        pids = info["kernels"]
        watched = [*pids, info["grandchild"]]
        assert all(pid_alive(pid) for pid in watched)
        assert len(list(tmp_path.glob("kernel-*.json"))) == 3
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        ended = wait_gone(watched, timeout=10)
        assert set(ended) == set(watched), f"outlived their host: {set(watched) - set(ended)}"
        print(f"ended {sorted(ended.values())} s after the host's SIGKILL")
        # The reaper also removed the connection files (they hold the keys) and logs.
        assert wait_files_gone(tmp_path, timeout=10) == []
    finally:
        host.kill()
        host.wait(10)
        if host.stdout is not None:
            host.stdout.close()
        for pid in pids:  # whatever is left of the kernels' process groups
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def sleeper() -> subprocess.Popen[bytes]:
    """Start a process in its own group, like a kernel, that would run for ten minutes."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True
    )


def test_a_host_exiting_without_shutdown_takes_its_kernels_along(tmp_path):
    code = textwrap.dedent(
        """
        import asyncio, sys
        from kernel_hub import KernelType, LaunchRequest, launch_subprocess
        kt = KernelType(provider="plain", name="s", argv=(sys.executable, "-c", "input()"))
        result = asyncio.run(launch_subprocess(kt, LaunchRequest(kernel_id="k")))
        print(result.state["pid"], flush=True)
        """
    )
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    pid = int(res.stdout)
    try:
        assert wait_gone([pid], timeout=10) == {pid: pytest.approx(0, abs=10)}
        assert wait_files_gone(tmp_path, timeout=10) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_reaper_comes_back_after_being_killed_and_kills_every_registered_group():
    from kernel_hub.managers.reaper import Reaper

    reaper = Reaper()
    first, second, spared = sleeper(), sleeper(), sleeper()
    try:
        reaper.add(first.pid)
        reaper.add(spared.pid)
        helper = reaper.pid
        assert helper is not None and "RUNNING" in repr(reaper)
        os.kill(helper, signal.SIGKILL)
        assert wait_gone([helper], timeout=10) == {helper: pytest.approx(0, abs=10)}
        reaper.add(second.pid)  # a new helper, told about every group again
        assert reaper.pid not in (None, helper)
        reaper.remove(spared.pid)
        reaper.remove(12345678)  # never registered: ignored
        reaper.close()
        assert first.wait(10) == -signal.SIGKILL
        assert second.wait(10) == -signal.SIGKILL
        assert spared.poll() is None
        assert "STOPPED" in repr(reaper)
    finally:
        for proc in (first, second, spared):
            proc.kill()
            proc.wait()


#: A host that registers a file, a directory, a command and a process to SIGTERM with the
#: reaper (the seam providers use: kernel_hub.provider.reap_on_exit), then waits to be killed.
REGISTERING_HOST = textwrap.dedent(
    """
    import sys, time
    from kernel_hub.provider import reap_on_exit
    key_file, key_dir, marker, victim, spared = sys.argv[1:6]
    reap_on_exit([key_file, key_dir], command=[sys.executable, "-c",
                 f"open({marker!r}, 'w').write('ran')"], terminate=int(victim))
    cancel = reap_on_exit(terminate=int(spared))
    cancel()  # cleaned up in the normal way: the reaper forgets it
    print("registered", flush=True)
    sys.stdin.read()
    """
)


def test_files_commands_and_processes_registered_by_a_killed_host_are_handled(tmp_path):
    key_dir = tmp_path / "private"
    key_dir.mkdir()
    key_file = key_dir / "kernel-hub-x.json"
    key_file.write_text("{}")
    marker = tmp_path / "command-ran"
    victim, spared = sleeper(), sleeper()
    host = subprocess.Popen(
        [
            sys.executable,
            "-c",
            REGISTERING_HOST,
            str(key_file),
            str(key_dir),
            str(marker),
            str(victim.pid),
            str(spared.pid),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout.readline() == "registered\n"
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        assert victim.wait(30) == -signal.SIGTERM  # the reaper's SIGTERM, at once
        assert not key_file.exists() and not key_dir.exists()
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)  # the command runs detached: observe its effect
        assert marker.read_text() == "ran"
        assert spared.poll() is None
    finally:
        host.kill()
        host.wait()
        for stream in (host.stdin, host.stdout):
            stream.close()
        for proc in (victim, spared):
            proc.kill()
            proc.wait()


def test_terminate_spares_a_reused_pid():
    from kernel_hub.managers.reaper import _TERMINATE

    proc = sleeper()
    try:
        # The start time does not match: another process now has this pid, leave it alone.
        cmd = [sys.executable, "-I", "-S", "-c", _TERMINATE, str(proc.pid), "12345"]
        subprocess.run(cmd, check=True, timeout=30)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
