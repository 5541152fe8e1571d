from __future__ import annotations

import json
import stat

import pytest

from kernel_hub.connection import (
    channel_url,
    new_connection_info,
    read_connection_file,
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
    from kernel_hub.connection import port_band

    band = port_band()
    if band is None:
        pytest.skip("this OS has no port band outside its ephemeral range")
    ports = new_connection_info()
    for c in ("shell", "iopub", "stdin", "control", "hb"):
        assert band[0] <= ports[f"{c}_port"] <= band[1]
