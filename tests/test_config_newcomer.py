"""The config file as a newcomer meets it, through the real ``kernel-hub`` (issue 16, item 7)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kernel_hub.plugins.config import ConfigCheck
from kernel_hub.testing import run_cli

CLI = [sys.executable, "-m", "kernel_hub"]

CONFIG = """
[ssh.good]
host = "good-box"

[ssh.bad]
hots = "bad-box"

[sssh.box]
host = "box"

[docker]
ping_timeout = 2
"""


def cli(*args: str, config: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={"KERNEL_HUB_CONFIG": config})


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "kernel-hub.toml"
    path.write_text(CONFIG)
    return str(path)


def test_a_missing_file_named_by_the_environment_is_an_error(tmp_path):
    res = cli("list", config=str(tmp_path / "nope.toml"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "KERNEL_HUB_CONFIG names" in res.stderr and "nope.toml" in res.stderr
    assert "does not exist" in res.stderr and "unset KERNEL_HUB_CONFIG" in res.stderr


def test_one_bad_ssh_table_hides_only_itself_and_unknown_tables_are_not_warned(config):
    res = cli("list", "--json", config=config)
    assert res.returncode == 0, res.stderr
    ids = {t["id"] for t in json.loads(res.stdout)}
    assert "ssh/good" in ids and "ssh/bad" not in ids
    warnings = [line for line in res.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, res.stderr  # once, although discovery may run again
    (bad,) = [w for w in warnings if "[ssh.bad]" in w]
    assert "'hots'" in bad and "did you mean 'host'" in bad
    assert "ssh/bad kernel type is left out" in bad
    assert "SSHKernelConfig" not in res.stderr and "ConfigError(" not in res.stderr
    # [sssh] is no warning here (issue #22 item 2: it may be a plugin of another environment);
    # config check names it, and -vv logs it at debug level
    assert "[sssh]" not in res.stderr
    debug = cli("-vv", "list", config=config).stderr
    (unknown,) = [line for line in debug.splitlines() if "[sssh]" in line]
    assert "DEBUG" in unknown and "no installed plugin owns" in unknown
    assert "Known plugins: docker, ipykernel" in unknown and "ssh" in unknown


def test_config_check_shows_effective_values_and_sources_and_fails_on_errors(config):
    res = cli("config", "check", config=config)
    assert res.returncode == 2
    out = res.stdout
    assert f"config file {config}, from KERNEL_HUB_CONFIG" in out
    assert "[ssh.good]  ok" in out
    assert "  host " in out and '"good-box"  (config)' in out
    assert '"python3"  (default)' in out
    assert "[ssh.bad]  ERROR:" in out and "did you mean 'host'" in out
    assert "[sssh]  ERROR: [sssh] is ignored: no installed plugin owns it" in out
    assert "ping_timeout    = 2  (config)" in out and "discover_labels = true  (default)" in out
    data = json.loads(cli("config", "check", "--json", config=config).stdout)
    tables = {t["table"]: t for t in data["tables"]}
    assert tables["ssh.good"]["values"]["connect_timeout"] == {"value": 10.0, "source": "default"}
    assert tables["ssh.bad"]["error"] and tables["ssh.good"]["error"] is None


def test_config_check_of_a_good_file_succeeds(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text('[ssh.box]\nhost = "box"\nport = 2222\n')
    res = cli("config", "check", config=str(path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "port" in res.stdout and "2222  (config)" in res.stdout


def test_config_check_records_are_json_able():
    check = ConfigCheck("ssh.x", {"port": (22, "default")})
    assert json.loads(json.dumps(check.to_dict()))["values"]["port"]["source"] == "default"


def test_a_table_of_a_plugin_installed_elsewhere_is_named_by_config_check_only(tmp_path):
    """Issue #22 item 2: one file, two environments: no warning on every command of the smaller."""
    path = tmp_path / "shared.toml"
    path.write_text('[not-installed]\nsetting = 1\n\n[ssh.box]\nhost = "box"\n')
    listed = cli("list", config=str(path))
    assert listed.returncode == 0, listed.stderr
    assert "not-installed" not in listed.stderr and "WARNING" not in listed.stderr
    checked = cli("config", "check", config=str(path))
    assert checked.returncode == 2
    assert "[not-installed]  ERROR: [not-installed] is ignored: no installed plugin owns it" in (
        checked.stdout
    )
    assert "known plugins: docker" in checked.stdout and "[ssh.box]  ok" in checked.stdout
