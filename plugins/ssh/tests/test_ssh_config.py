"""Tests of the ``[ssh.<name>]`` config tables: parsing, validation, kernel types."""

from __future__ import annotations

import json
import subprocess

import pytest
from kernel_hub_ssh.config import SSHHostConfig, kernel_types, parse_config

from kernel_hub.contract.errors import ConfigError
from kernel_hub.testing import run_cli


def test_minimal_table_gives_defaults():
    (kc,) = parse_config({"Box": {"host": "box"}}).values()
    assert kc.name == "box"
    assert kc.python == "python3"
    assert kc.language == "python"
    assert kc.target == SSHHostConfig(host="box")
    assert kc.target.connect_timeout == 10.0
    assert kc.target.known_hosts is None
    assert kc.target.insecure_no_host_key_check is False
    kt = kc.kernel_type()
    assert kt.id == "ssh/box"
    assert kt.display_name == "box (ssh box)"
    assert kt.metadata == {"host": "box", "python": "python3"}


def test_full_table():
    table = {
        "host": "gpu",
        "port": 2222,
        "user": "me",
        "identity_file": "~/.ssh/id_gpu",
        "python": "/opt/py/bin/python",
        "cwd": "~/work",
        "env": {"A": "1"},
        "display_name": "GPU",
        "language": "python",
        "jump_host": "me@bastion:22",
        "connect_timeout": 3,
        "reconnect_timeout": 30.5,
        "known_hosts": "/etc/kh",
        "insecure_no_host_key_check": False,
        "config": ["/tmp/ssh_config"],
    }
    (kc,) = parse_config({"gpu": table}).values()
    assert kc.target.label == "me@gpu:2222"
    assert kc.target.identity_file is not None and kc.target.identity_file.endswith("/.ssh/id_gpu")
    assert not kc.target.identity_file.startswith("~")
    assert kc.target.connect_timeout == 3.0
    assert kc.target.config == ("/tmp/ssh_config",)
    assert kc.env == {"A": "1"}
    assert kc.cwd == "~/work"  # expanded remotely, not here
    assert SSHHostConfig.from_state(kc.target.to_state()) == kc.target
    assert kernel_types({"gpu": table})[0].display_name == "GPU"


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({}, ["[ssh.box]", "'host'"]),
        ({"host": "h", "port": "22"}, ["[ssh.box]", "'port'", "int"]),
        ({"host": "h", "port": True}, ["'port'"]),
        ({"host": "h", "port": 70000}, ["'port'", "65535"]),
        ({"host": "h", "connect_timeout": 0}, ["'connect_timeout'", "positive"]),
        ({"host": "h", "env": {"A": 1}}, ["'env'", "strings"]),
        ({"host": "h", "hots": "x"}, ["unknown", "'hots'", "known fields"]),
        ({"host": "h", "insecure_no_host_key_check": "yes"}, ["insecure_no_host_key_check"]),
        ({"host": "h", "interrupt_mode": "poke"}, ["interrupt_mode"]),
        ({"host": "h", "config": [1]}, ["'config'"]),
    ],
)
def test_bad_tables_name_table_and_field(table, words):
    with pytest.raises(ConfigError) as info:
        parse_config({"box": table}, strict=True)
    for word in words:
        assert word in str(info.value)


def test_table_must_be_a_table():
    with pytest.raises(ConfigError, match=r"\[ssh.box\] must be a table"):
        parse_config({"box": "gpu-host"}, strict=True)


def test_bad_name():
    with pytest.raises(ConfigError, match=r"\[ssh.no way\]"):
        parse_config({"no way": {"host": "h"}}, strict=True)


# ---- the one config mechanism (issue #22 item 1) ----

BROKEN = """
[ssh.good]
host = "good-box"

[ssh.typo]
hots = "box"

[ssh.slow]
host = "box"
connect_timeout = "10s"
"""


def kernel_hub(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``kernel-hub`` on BROKEN (no connection is made: listing reads tables only)."""
    config = tmp_path / "config.toml"
    config.write_text(BROKEN)
    env = {"KERNEL_HUB_CONFIG": str(config), "KERNEL_HUB_DISABLE_PLUGINS": "docker"}
    return run_cli(*args, env=env)


def test_a_bad_table_is_one_warning_naming_the_file_and_drops_only_its_type(tmp_path):
    res = kernel_hub(tmp_path, "list", "--json")
    assert res.returncode == 0, res.stderr
    ids = {t["id"] for t in json.loads(res.stdout)}
    assert "ssh/good" in ids and not ids & {"ssh/typo", "ssh/slow"}
    warnings = [line for line in res.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, res.stderr
    (typo,) = [w for w in warnings if "[ssh.typo]" in w]
    assert f"kernel_hub config {tmp_path / 'config.toml'}: [ssh.typo]" in typo
    assert "'hots'" in typo and "did you mean 'host'?" in typo
    (slow,) = [w for w in warnings if "[ssh.slow]" in w]
    assert "field 'connect_timeout' must be a number, not str '10s'" in slow
    assert "The ssh/slow kernel type is left out until this is fixed" in slow


def test_config_check_reports_each_bad_ssh_table_with_docs(tmp_path):
    res = kernel_hub(tmp_path, "config", "check")
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout
    assert "[ssh.good]  ok" in out
    assert "  connect_timeout            = 10.0  (default)  # seconds for each connection" in out
    assert "[ssh.typo]  ERROR:" in out and "did you mean 'host'?" in out
    assert "[ssh.slow]  ERROR:" in out and "'connect_timeout' must be a number" in out


def test_hook_launch_of_a_rejected_table_says_why():
    from kernel_hub_ssh import plugin

    from kernel_hub.provider import KernelType, LaunchRequest

    class Hub:
        def config_for(self, name):
            return {"slow": {"host": "h", "connect_timeout": "10s"}}

    with pytest.raises(ConfigError, match=r"\[ssh.slow\] field 'connect_timeout' must be a number"):
        plugin.launch(
            hub=Hub(),
            kernel_type=KernelType(provider="ssh", name="slow"),
            request=LaunchRequest("k"),
        )
