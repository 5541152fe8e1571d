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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A host application: launches two kernels, one with a grandchild, reports pids, then idles.
HOST = textwrap.dedent(
    """
    import asyncio, json
    from kernel_hub import KernelHub

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
        pids = {"kernels": [k.manager.pid for k in kernels], "grandchild": int(text)}
        print(json.dumps(pids), flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def running(pid: int) -> bool:
    """Return whether *pid* runs (a zombie waiting to be reaped by init has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def wait_gone(pids: list[int], timeout: float) -> dict[int, float]:
    """Observe *pids* until all have ended or *timeout* passes; return seconds until each ended."""
    start = time.monotonic()
    ended: dict[int, float] = {}
    while time.monotonic() - start < timeout and len(ended) < len(pids):
        for pid in pids:
            if pid not in ended and not running(pid):
                ended[pid] = time.monotonic() - start
        time.sleep(0.02)  # observation of processes we cannot wait on (not our children)
    return ended


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
        assert all(running(pid) for pid in pids)
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        ended = wait_gone(pids, timeout=10)
        assert set(ended) == set(pids), f"kernels outlived their host: {set(pids) - set(ended)}"
        print(f"kernels ended {sorted(ended.values())} s after the host's SIGKILL")
    finally:
        host.kill()
        host.wait(10)
        if host.stdout is not None:
            host.stdout.close()
        for pid in pids:  # whatever is left of the kernels' process groups
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
