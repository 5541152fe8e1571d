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


def test_running_one_type_asks_only_its_own_plugin(tmp_path):
    """``kernel-hub run ipykernel/python3`` neither pings a Docker engine nor warns of one.

    The type's provider names its plugin, so no other plugin is asked for its
    types: a user with kernel-hub-docker installed and no engine running gets no
    Docker warning for a local kernel.
    """
    pytest.importorskip("kernel_hub_docker")
    from kernel_hub.testing import run_cli

    dead = f"unix://{tmp_path}/no-engine.sock"
    env = {"DOCKER_HOST": dead, "KERNEL_HUB_CONFIG": str(tmp_path / "none.toml")}
    (tmp_path / "none.toml").write_text("")
    result = run_cli("run", "ipykernel/python3", "-c", "print(6*7)", env=env)
    assert result.returncode == 0, result
    assert result.stdout.strip() == "42"
    assert "docker" not in result.stderr.lower(), result.stderr
    # Asking for every type still says why Docker's are missing.
    listed = run_cli("list", env=env)
    assert "docker" in listed.stderr.lower(), listed


@pytest.mark.asyncio
async def test_get_kernel_type_asks_the_named_plugin_first_and_everyone_when_it_lacks_it():
    from kernel_hub import KernelHub, KernelType
    from kernel_hub.provider import hookimpl

    asked: list[str] = []

    class Offers:
        def __init__(self, name: str, types: tuple[str, ...]) -> None:
            self.name, self.types = name, types

        @hookimpl
        def find_kernel_types(self, hub):
            asked.append(self.name)
            return [KernelType(provider=self.name, name=n) for n in self.types]

    hub = KernelHub(load_entrypoints=False, config={}, plugins=[])
    hub.pm.register(Offers("alpha", ("one",)), name="alpha")
    hub.pm.register(Offers("beta", ("two",)), name="beta")
    assert (await hub.get_kernel_type("alpha/one")).id == "alpha/one"
    assert asked == ["alpha"]
    assert hub.owner_of("alpha/one") == "alpha"
    # A type its plugin does not offer: everyone is asked, and the error lists what exists.
    from kernel_hub import NoSuchKernelType

    with pytest.raises(NoSuchKernelType, match="beta/two"):
        await hub.get_kernel_type("alpha/three")
    assert sorted(asked[1:]) == ["alpha", "alpha", "beta"]
