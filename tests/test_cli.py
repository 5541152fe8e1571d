"""The kernel-hub command line, run as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "kernel_hub"]


def run(*args, **kw):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, **kw)


def test_list_json_and_table():
    res = run("list", "--json")
    assert res.returncode == 0, res.stderr
    ids = {t["id"]: t for t in json.loads(res.stdout)}
    assert ids["ipykernel/python3"]["language"] == "python"
    table = run("list").stdout
    assert table.splitlines()[0].split() == ["ID", "PROVIDER", "DISPLAY", "NAME", "LANGUAGE"]
    assert "ipykernel/python3" in table


def test_plugins_lists_hooks():
    res = run("plugins", "--json")
    plugins = {p["name"]: p for p in json.loads(res.stdout)}
    assert plugins["spec"]["distribution"] == "kernel-hub-spec"
    assert "launch" in plugins["ipykernel"]["hooks"]
    assert plugins["kernel_hub.defaults"]["distribution"] == "kernel-hub"
    assert "HOOKS" in run("plugins").stdout


@pytest.mark.integration
def test_run_code_and_exit_status(tmp_path):
    ok = run("run", "-c", "print(6*7)")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "42\n"
    bad = run("run", "ipykernel/python3", "-c", "raise ValueError('nope')")
    assert bad.returncode == 1
    assert "ValueError: nope" in bad.stderr and "\x1b[" not in bad.stderr
    script = tmp_path / "s.py"
    script.write_text("import os\nprint(os.getcwd())\n")
    res = run("run", "--file", str(script), "--cwd", str(tmp_path))
    assert res.stdout.strip() == str(tmp_path)


def test_unknown_type_is_a_clear_error():
    res = run("run", "nope/x", "-c", "1")
    assert res.returncode == 2
    assert "no kernel type 'nope/x'" in res.stderr and "ipykernel/python3" in res.stderr


@pytest.mark.integration
def test_launch_stays_up_until_sigterm_then_cleans_up():
    with subprocess.Popen(
        [*CLI, "launch", "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        _check_launch(proc)


def _check_launch(proc):
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        path = Path(info["connection_file"])
        assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
        pid = info["state"]["pid"]
        os.kill(pid, 0)
        from kernel_hub.client import BlockingKernelClient

        with BlockingKernelClient(info["connection_info"]) as client:
            assert client.execute("1+1", timeout=60).content["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not path.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_ctrl_c_block_gives_back_the_sigint_handler_it_found():
    """asyncio.run's handler (cancel the main task, so it cleans up) comes back, not Python's.

    Python's default raises KeyboardInterrupt wherever the loop is, and asyncio.run then
    waits for every task to end: a press between two blocks of ``run`` could hang it.
    """
    import asyncio

    from kernel_hub.cli.terminal import CtrlC

    async def main() -> tuple[object, object, object]:
        before = signal.getsignal(signal.SIGINT)
        with CtrlC(lambda _: None):
            during = signal.getsignal(signal.SIGINT)
        return before, during, signal.getsignal(signal.SIGINT)

    before, during, after = asyncio.run(main())
    assert during != before
    assert after == before and after is not signal.default_int_handler
