from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from kernel_hub.wire.connection import (
    channel_url,
    new_connection_info,
    read_connection_file,
    runtime_dir,
    write_connection_file,
)


def test_new_connection_info_is_loopback_with_random_key_and_distinct_ports():
    a, b = new_connection_info(), new_connection_info()
    assert a["ip"] == "127.0.0.1"
    assert len(a["key"]) == 64 and a["key"] != b["key"]
    ports = [a[f"{c}_port"] for c in ("shell", "iopub", "stdin", "control", "hb")]
    ports += [b[f"{c}_port"] for c in ("shell", "iopub", "stdin", "control", "hb")]
    assert len(set(ports)) == 10
    assert channel_url(a, "shell") == f"tcp://127.0.0.1:{a['shell_port']}"


def test_connection_file_is_private(tmp_path):
    path = tmp_path / "k.json"
    path.write_text("{}")
    path.chmod(0o644)  # an existing, readable file must be tightened
    write_connection_file(new_connection_info(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_connection_file(path)["ip"] == "127.0.0.1"


def test_read_connection_file_names_the_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ip": "127.0.0.1"}))
    with pytest.raises(ValueError, match="bad.json.*not a kernel connection file"):
        read_connection_file(bad)
    with pytest.raises(ValueError, match="cannot read connection file"):
        read_connection_file(tmp_path / "missing.json")


def test_ports_avoid_the_ephemeral_range():
    from kernel_hub.wire.connection import port_band

    band = port_band()
    if band is None:
        pytest.skip("this OS has no port band outside its ephemeral range")
    ports = new_connection_info()
    for c in ("shell", "iopub", "stdin", "control", "hb"):
        assert band[0] <= ports[f"{c}_port"] <= band[1]


@pytest.mark.parametrize(
    "env",
    [
        {"JUPYTER_RUNTIME_DIR": "{tmp}/rt"},
        {"JUPYTER_DATA_DIR": "{tmp}/data"},
        {"XDG_DATA_HOME": "{tmp}/xdg"},
        {"XDG_DATA_HOME": ""},
        {"JUPYTER_RUNTIME_DIR": "", "JUPYTER_DATA_DIR": ""},
        {"JUPYTER_PLATFORM_DIRS": "1"},
        {"JUPYTER_PLATFORM_DIRS": "0"},
    ],
    ids=["runtime", "data", "xdg", "empty-xdg", "empty", "platform-dirs", "platform-dirs-off"],
)
def test_runtime_dir_is_jupyter_cores(tmp_path, monkeypatch, env):
    # HOME behind a symlink: jupyter_core resolves it, and so must we.
    (tmp_path / "real-home").mkdir()
    (tmp_path / "home").symlink_to(tmp_path / "real-home")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in (
        "JUPYTER_RUNTIME_DIR",
        "JUPYTER_DATA_DIR",
        "XDG_DATA_HOME",
        "JUPYTER_PLATFORM_DIRS",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    from jupyter_core.paths import jupyter_runtime_dir

    path = runtime_dir()
    assert path == Path(jupyter_runtime_dir())
    assert path.is_dir() and path.stat().st_mode & 0o777 == 0o700
    assert str(path).startswith(str(tmp_path))  # nothing escaped to the real home
