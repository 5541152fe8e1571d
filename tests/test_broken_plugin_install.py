"""``kernel-hub plugins`` in a real installation that holds broken plugins.

A throwaway distribution with two entry points, one whose module raises on
import and one whose hook has an argument no hookspec knows, is installed with
the core and the spec plugin into a fresh venv (``uv venv`` + ``uv pip install``).
The CLI there must flag both, with the reason, and still work for the others.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kernel_hub.testing import require_service

ROOT = Path(__file__).resolve().parents[1]

PYPROJECT = """
[project]
name = "kh-broken-plugins"
version = "0.0.1"
requires-python = ">=3.11"
dependencies = ["kernel-hub"]

[project.entry-points.kernel_hub]
boom = "kh_broken.boom"
badhook = "kh_broken.badhook"

[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[tool.hatch.build.targets.wheel]
packages = ["kh_broken"]
"""

BOOM = 'raise RuntimeError("kh-broken: this plugin cannot be imported")\n'

BADHOOK = """
from kernel_hub import hookimpl


@hookimpl
def launch(hub, kernel_type, request, surprise):
    return None
"""


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with the core, the spec plugin and the broken distribution."""
    uv = os.environ.get("UV") or shutil.which("uv")
    require_service("uv", uv is not None, "install uv: python3 -m pip install uv")
    tmp = tmp_path_factory.mktemp("broken")
    src = tmp / "src"
    (src / "kh_broken").mkdir(parents=True)
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "kh_broken" / "__init__.py").write_text("")
    (src / "kh_broken" / "boom.py").write_text(BOOM)
    (src / "kh_broken" / "badhook.py").write_text(BADHOOK)
    venv = tmp / "venv"
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    run = {"env": env, "capture_output": True, "text": True, "timeout": 300, "check": True}
    subprocess.run([uv, "venv", "-q", str(venv)], **run)
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
         str(ROOT), str(ROOT / "plugins" / "spec"), str(src)],
        **run,
    )  # fmt: skip
    return venv


def kernel_hub_cli(venv, *args, **extra_env):
    env = {k: v for k, v in os.environ.items() if k != "KERNEL_HUB_DISABLE_PLUGINS"}
    env.update(KERNEL_HUB_CONFIG=os.devnull, **extra_env)
    return subprocess.run(
        [str(venv / "bin" / "kernel-hub"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_plugins_json_flags_broken_plugins_with_the_reason(venv):
    res = kernel_hub_cli(venv, "plugins", "--json")
    assert res.returncode == 0, res.stderr
    plugins = {p["name"]: p for p in json.loads(res.stdout)}

    boom = plugins["boom"]
    assert boom["distribution"] == "kh-broken-plugins" and boom["version"] == "0.0.1"
    assert boom["error"] == (
        "RuntimeError: kh-broken: this plugin cannot be imported (importing kh_broken.boom)"
    )
    assert boom["hooks"] == []
    bad = plugins["badhook"]
    assert "surprise" in bad["error"] and "launch" in bad["error"], bad
    assert plugins["spec"]["error"] is None
    assert plugins["spec"]["hooks"] == ["find_kernel_types", "launch", "make_manager"]
    # The logged warning names the plugin and its distribution.
    assert "'boom' (kh-broken-plugins) failed to load" in res.stderr


@pytest.mark.slow
def test_plugins_table_flags_them_too(venv):
    table = kernel_hub_cli(venv, "plugins")
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "FAILED: RuntimeError: kh-broken: this plugin cannot be imported" in rows["boom"]
    assert "FAILED:" in rows["badhook"]
    assert "find_kernel_types, launch, make_manager" in rows["spec"]


@pytest.mark.slow
def test_list_still_offers_the_other_plugins_kernels(venv, tmp_path):
    spec_dir = tmp_path / "kernels" / "kh-visible"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({"argv": ["x", "{connection_file}"]}))

    listed = kernel_hub_cli(venv, "list", "--json", JUPYTER_PATH=str(tmp_path))

    assert listed.returncode == 0, listed.stderr
    assert "spec/kh-visible" in {t["id"] for t in json.loads(listed.stdout)}
    assert "'boom' (kh-broken-plugins) failed to load" in listed.stderr
