"""The ``[docker]`` settings and ``[docker.<name>]`` tables through the one config mechanism.

Issue #22 item 1: a bad setting or table costs only itself, in one line naming
the file, the table, the field and the fix; ``kernel-hub config check`` says the
same and fails. The real ``kernel-hub`` runs as a subprocess.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from kernel_hub.testing import run_cli

BROKEN = """
[docker]
ping_timeout = "x"
discover_labels = false

[docker.good]
image = "python:3.11-slim"

[docker.typo]
image = "python:3.11-slim"
memroy = "1g"

[docker.wrong]
image = "python:3.11-slim"
cpus = "two"
"""


def kernel_hub(tmp_path, *args: str, text: str = BROKEN) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(text)
    env = {"KERNEL_HUB_CONFIG": str(config), "KERNEL_HUB_DISABLE_PLUGINS": "ssh"}
    return run_cli(*args, env=env)


@pytest.mark.docker
def test_a_bad_setting_or_table_costs_only_itself(tmp_path, docker_image):
    res = kernel_hub(tmp_path, "list", "--json")
    assert res.returncode == 0, res.stderr
    ids = {t["id"] for t in json.loads(res.stdout)}
    assert "docker/good" in ids and not ids & {"docker/typo", "docker/wrong"}
    warnings = [line for line in res.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 3, res.stderr
    where = f"kernel_hub config {tmp_path / 'config.toml'}: "
    (setting,) = [w for w in warnings if "[docker] " in w]
    assert setting.endswith(
        f"{where}[docker] field 'ping_timeout' must be a number, not str 'x'. "
        "Its default 3.0 is used until this is fixed"
    )
    (typo,) = [w for w in warnings if "[docker.typo]" in w]
    assert "unknown field(s) 'memroy'" in typo and "did you mean 'memory'?" in typo
    assert "The docker/typo kernel type is left out until this is fixed" in typo
    (wrong,) = [w for w in warnings if "[docker.wrong]" in w]
    assert "field 'cpus' must be a number, not str 'two'" in wrong
    assert "ValueError" not in res.stderr and "failed in find_kernel_types" not in res.stderr


def test_config_check_reports_each_bad_docker_setting_and_table(tmp_path):
    res = kernel_hub(tmp_path, "config", "check")
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout
    assert "[docker]  ERROR: " in out and "'ping_timeout' must be a number, not str 'x'" in out
    assert "  ping_timeout    = 3.0  (default)  # seconds" in out
    assert "  discover_labels = false  (config)" in out
    assert "[docker.good]  ok" in out and '"python:3.11-slim"  (config)' in out
    assert "[docker.typo]  ERROR:" in out and "did you mean 'memory'?" in out
    assert "[docker.wrong]  ERROR:" in out and "'cpus' must be a number" in out
    assert "3 table(s) with errors" in res.stderr


def test_an_unknown_setting_gets_a_did_you_mean(tmp_path):
    res = kernel_hub(tmp_path, "config", "check", text="[docker]\npign_timeout = 2\n")
    assert res.returncode == 2
    assert "[docker] has unknown setting(s) 'pign_timeout'" in res.stdout
    assert "did you mean 'ping_timeout'?" in res.stdout
