"""Installed but idle plugins cost nothing: no asyncssh, docker-py or requests (issue 16, item 11).

With ``kernel-hub-ssh`` and ``kernel-hub-docker`` installed, listing kernel
types and a host's import + discovery must not import their heavy
dependencies unless there is something to do. Checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("asyncssh", "cryptography", "docker", "requests", "urllib3")

HOST = """
import asyncio, json, sys
from kernel_hub import KernelHub
types = asyncio.run(KernelHub().find_kernel_types())
print(json.dumps({"ids": [t.id for t in types], "heavy": [m for m in HEAVY if m in sys.modules]}))
"""

LIST = """
import json, sys, contextlib, io
from kernel_hub.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    status = main(["list"])
print(json.dumps({"status": status, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def run(code: str, config: str) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "KERNEL_HUB_CONFIG": config},
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


@pytest.fixture(params=["no config", "an ssh table"])
def config(request, tmp_path):
    path = tmp_path / "kh.toml"
    path.write_text('[ssh.box]\nhost = "box"\n' if request.param == "an ssh table" else "")
    return str(path)


def test_plugins_are_installed():
    from kernel_hub.plugins import make_plugin_manager

    names = {name for name, _ in make_plugin_manager().list_name_plugin()}
    assert {"ssh", "docker"} <= names


def test_a_host_discovers_without_importing_heavy_dependencies(config):
    found = run(HOST, config)
    assert found["heavy"] == []
    assert "ipykernel/python3" in found["ids"]
    if "box" in Path(config).read_text():
        assert "ssh/box" in found["ids"]  # listed from the table alone, no connection


def test_kernel_hub_list_imports_no_heavy_dependency(config):
    assert run(LIST, config) == {"status": 0, "heavy": []}
