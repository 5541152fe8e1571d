"""The README's way to install the plugins today works (issue 16, item 9).

The distributions are not on PyPI; the README says to build wheels with
``uv build`` and install them with ``--find-links``. This does exactly that
in a fresh venv and checks that the ssh plugin is there and offers a type
from a config table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from kernel_hub.testing import require_service

ROOT = Path(__file__).resolve().parents[1]


def test_readme_names_every_plugin_and_explains_nice():
    readme = (ROOT / "README.md").read_text()
    for plugin in sorted(ROOT.glob("plugins/*/pyproject.toml")):
        dist = f"kernel-hub-{plugin.parent.name}"
        assert f"[`{dist}`](plugins/" in readme
    assert "`nice/python3`" in readme and "[`examples/nice`](examples/nice)" in readme
    assert "not on PyPI yet" in readme
    for plugin in ROOT.glob("plugins/*/README.md"):
        assert "not on PyPI yet" in plugin.read_text(), plugin


@pytest.mark.slow
def test_wheels_built_with_uv_install_with_find_links(tmp_path):
    uv = os.environ.get("UV") or shutil.which("uv")
    require_service("uv", uv is not None, "install uv: python3 -m pip install uv")
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    }
    run = {"env": env, "capture_output": True, "text": True, "timeout": 300, "check": True}
    dist = tmp_path / "dist"
    for package in ("kernel-hub", "kernel-hub-ssh", "kernel-hub-ipykernel"):
        subprocess.run(
            [uv, "build", "-q", "--wheel", "--package", package, "-o", str(dist)], cwd=ROOT, **run
        )
    # The test kit is a distribution of its own: the plugin's wheel keeps only its old name.
    (wheel,) = dist.glob("kernel_hub_ssh-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        assert "def start_sshd" not in whl.read("kernel_hub_ssh/testing.py").decode()
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", str(venv)], **run)
    python = str(venv / "bin" / "python")
    # The lock's versions of everything else (as in CI's other venvs): the test checks the
    # install path, not today's releases.
    pins = tmp_path / "constraints.txt"
    subprocess.run(
        [uv, "export", "--frozen", "--no-hashes", "--no-header", "--no-annotate",
         "--no-emit-workspace", "--all-packages", "-o", str(pins)],
        cwd=ROOT, **run,
    )  # fmt: skip
    # What the README says, with uv's pip (the venv has no pip of its own).
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", python, "--find-links", str(dist),
         "-c", str(pins), "kernel-hub-ssh", "kernel-hub-ipykernel"],
        **run,
    )  # fmt: skip
    config = tmp_path / "kh.toml"
    config.write_text('[ssh.box]\nhost = "box"\n')
    cli_env = {**env, "KERNEL_HUB_CONFIG": str(config)}
    cli_env.pop("KERNEL_HUB_DISABLE_PLUGINS", None)
    res = subprocess.run(
        [str(venv / "bin" / "kernel-hub"), "list", "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    # The ipykernel plugin brings ipykernel (issue 20: it offered nothing here before).
    assert {t["id"] for t in json.loads(res.stdout)} == {"ssh/box", "ipykernel/python3"}

    # The old path of the test kit, without the "testing" extra: one line naming it.
    res = subprocess.run(
        [python, "-c", "import kernel_hub_ssh.testing"], capture_output=True, text=True, timeout=60
    )
    assert res.stderr.splitlines()[-1] == (
        "ModuleNotFoundError: No module named 'kernel_hub_ssh_testing': "
        "kernel_hub_ssh.testing needs pip install 'kernel-hub-ssh[testing]'"
    )

    # The README's first command, in that venv.
    cli = [str(venv / "bin" / "kernel-hub"), "run", "-c", "print(6*7)"]
    res = subprocess.run(cli, env=cli_env, capture_output=True, text=True, timeout=120)
    assert (res.returncode, res.stdout) == (0, "42\n"), res.stderr

    # The plugin without its kernel (a --no-deps install, a broken env): the error says so.
    subprocess.run([uv, "pip", "uninstall", "-q", "--python", python, "ipykernel"], **run)
    res = subprocess.run(cli, env=cli_env, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and res.stdout == ""
    assert res.stderr == (
        "kernel-hub: error: kernel type 'ipykernel/python3' is not available: "
        "kernel-hub-ipykernel is "
        f"installed, but ipykernel is not importable by {python}; "
        f"install it: {python} -m pip install ipykernel\n"
    )
