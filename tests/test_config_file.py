"""The config file: read only when it exists, errors that name the file."""

from __future__ import annotations

import pytest

from kernel_hub import ConfigError
from kernel_hub.plugins.config import config_path, load_config


def test_a_missing_file_is_an_empty_config(tmp_path):
    assert load_config(tmp_path / "nothing.toml") == {}


def test_the_environment_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "kh.toml"
    path.write_text('[ssh.gpu-box]\nhost = "gpu-box"\n')
    monkeypatch.setenv("KERNEL_HUB_CONFIG", str(path))
    assert config_path() == path
    assert load_config() == {"ssh": {"gpu-box": {"host": "gpu-box"}}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ssh\n", "cannot read kernel_hub config"),
        ("ssh = 1\n", "[ssh] must be a table of the 'ssh' plugin, not int"),
    ],
    ids=["invalid-toml", "not-a-table"],
)
def test_a_bad_file_is_a_config_error_naming_it(tmp_path, text, message):
    path = tmp_path / "kh.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="kh.toml") as info:
        load_config(path)
    assert message in str(info.value)


def test_an_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read kernel_hub config"):
        load_config(tmp_path)  # a directory
