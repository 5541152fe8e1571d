"""Unit tests of kernelspec discovery and kernel.json parsing (no kernel is started)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import pytest
from kernel_hub_spec.kernelspec import (
    KernelSpecError,
    find_kernelspecs,
    kernel_dirs,
    load_kernelspec,
    parse_kernelspec,
)

from kernel_hub.contract.types import KernelType

LOGGER = "kernel_hub.spec"
MINOR = sys.version_info[1]


def write_spec(kernels_dir: Path, name: str, data: object) -> Path:
    """Write ``kernels_dir/name/kernel.json`` (``data`` JSON-encoded unless str/bytes)."""
    spec_dir = kernels_dir / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    path = spec_dir / "kernel.json"
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_text(json.dumps(data))
    return path


def good(display_name: str = "Good") -> dict[str, object]:
    return {"argv": ["/bin/kernel", "-f", "{connection_file}"], "display_name": display_name}


@pytest.fixture
def jpath(tmp_path, monkeypatch):
    """Point JUPYTER_PATH at two temp dirs and the user data dir at a third.

    Returns ``(first, second, user)`` ``kernels`` directories. The environment's
    and system's share/jupyter dirs stay on the path (jupyter_core fixes them at
    import time), so tests of the default path look for their own names only.
    """
    first, second, data = tmp_path / "p1", tmp_path / "p2", tmp_path / "data"
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(first), str(second)]))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data))
    # Both change which user/env dirs jupyter_core picks; keep them out of the test.
    monkeypatch.delenv("JUPYTER_PREFER_ENV_PATH", raising=False)
    monkeypatch.delenv("JUPYTER_PLATFORM_DIRS", raising=False)
    return first / "kernels", second / "kernels", data / "kernels"


def by_name(types: list[KernelType]) -> dict[str, KernelType]:
    return {kt.name: kt for kt in types}


# ---- parsing ----


def test_every_kernel_json_field_is_honoured(tmp_path):
    path = write_spec(
        tmp_path,
        "full",
        {
            "argv": ["/opt/k/bin/kernel", "-f", "{connection_file}", "--res={resource_dir}"],
            "display_name": "Full Kernel",
            "language": "fortran",
            "env": {"A": "1", "B": "${HOME}/x"},
            "interrupt_mode": "message",
            "metadata": {"debugger": True, "nested": {"a": [1, 2]}},
            "kernel_protocol_version": "5.5",  # kept in metadata: 5.6 means a handshake
            "codemirror_mode": "fortran",  # unknown keys are ignored
        },
    )
    kt = load_kernelspec(path.parent)
    assert kt == KernelType(
        provider="spec",
        name="full",
        display_name="Full Kernel",
        language="fortran",
        argv=("/opt/k/bin/kernel", "-f", "{connection_file}", "--res={resource_dir}"),
        env={"A": "1", "B": "${HOME}/x"},
        interrupt_mode="message",
        resource_dir=str(path.parent),
        metadata={"debugger": True, "nested": {"a": [1, 2]}, "kernel_protocol_version": "5.5"},
    )
    assert kt.id == "spec/full"


def test_optional_fields_default(tmp_path):
    kt = load_kernelspec(write_spec(tmp_path, "bare", {"argv": ["k"]}).parent)
    assert kt.display_name == "bare"
    assert kt.language == ""
    assert dict(kt.env) == {}
    assert kt.interrupt_mode == "signal"
    assert dict(kt.metadata) == {}


def test_templates_and_env_vars_are_left_for_the_launcher(tmp_path):
    kt = parse_kernelspec(
        {"argv": ["k", "{connection_file}", "{resource_dir}/x"], "env": {"P": "${PATH}:$HOME"}},
        name="t",
        resource_dir=str(tmp_path),
    )
    assert kt.argv == ("k", "{connection_file}", "{resource_dir}/x")
    assert dict(kt.env) == {"P": "${PATH}:$HOME"}


def test_name_is_normalised_to_lower_case(tmp_path):
    kt = load_kernelspec(write_spec(tmp_path, "MyKernel", good()).parent)
    assert kt.name == "mykernel"
    assert kt.resource_dir == str(tmp_path / "MyKernel")


@pytest.mark.parametrize("exe", ["python", "python3", f"python3.{MINOR}"])
def test_bare_python_argv0_becomes_this_interpreter(tmp_path, exe):
    kt = parse_kernelspec(
        {"argv": [exe, "-m", "ipykernel_launcher", "-f", "{connection_file}", "python"]},
        name="py",
        resource_dir=str(tmp_path),
    )
    assert kt.argv == (
        sys.executable,
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
        "python",
    )


@pytest.mark.parametrize(
    "exe", ["python2", f"python3.{MINOR + 1}", "/usr/bin/python3", "pypy3", "ipython"]
)
def test_other_argv0_is_kept(tmp_path, exe):
    kt = parse_kernelspec({"argv": [exe, "-m", "x"]}, name="py", resource_dir=str(tmp_path))
    assert kt.argv == (exe, "-m", "x")


# ---- malformed kernel.json ----

MALFORMED = [
    pytest.param("{not json", "not valid JSON", id="bad-json"),
    pytest.param(b'{"argv": ["\xff"]}', "not valid JSON", id="not-utf8"),
    pytest.param([["k"]], "JSON object", id="not-an-object"),
    pytest.param({"display_name": "x"}, "'argv' is missing", id="missing-argv"),
    pytest.param({"argv": []}, "'argv' must be a non-empty list", id="empty-argv"),
    pytest.param({"argv": "python -m k"}, "'argv' must be a non-empty list", id="argv-str"),
    pytest.param({"argv": ["k", 1]}, "'argv' must be a non-empty list", id="argv-int"),
    pytest.param({"argv": ["k"], "display_name": 3}, "'display_name' must be a string", id="dn"),
    pytest.param({"argv": ["k"], "language": ["py"]}, "'language' must be a string", id="lang"),
    pytest.param({"argv": ["k"], "env": ["A=1"]}, "'env' must be an object", id="env-list"),
    pytest.param({"argv": ["k"], "env": {"A": 1}}, "'env' must be an object", id="env-int"),
    pytest.param(
        {"argv": ["k"], "interrupt_mode": "poke"}, "'interrupt_mode' must be", id="interrupt"
    ),
    pytest.param({"argv": ["k"], "metadata": []}, "'metadata' must be an object", id="metadata"),
    pytest.param(
        {"argv": ["k"], "kernel_protocol_version": 5.6},
        "'kernel_protocol_version' must be a string",
        id="protocol-version",
    ),
]


@pytest.mark.parametrize(("content", "problem"), MALFORMED)
def test_malformed_spec_is_skipped_with_a_warning(jpath, caplog, content, problem):
    first, _, _ = jpath
    bad = write_spec(first, "kh-bad", content)
    write_spec(first, "kh-good", good())
    caplog.set_level(logging.WARNING, logger=LOGGER)

    types = by_name(find_kernelspecs())

    assert "kh-good" in types
    assert "kh-bad" not in types
    records = [r for r in caplog.records if str(bad) in r.getMessage()]
    assert len(records) == 1, caplog.text
    assert records[0].name == LOGGER
    assert records[0].levelno == logging.WARNING
    assert problem in records[0].getMessage()


@pytest.mark.parametrize("name", ["bad name", "-dash-first", "ünï"])
def test_invalid_directory_name_is_skipped_with_a_warning(tmp_path, caplog, name):
    bad = write_spec(tmp_path, name, good())
    write_spec(tmp_path, "ok", good())
    caplog.set_level(logging.WARNING, logger=LOGGER)

    assert [kt.name for kt in find_kernelspecs([tmp_path])] == ["ok"]
    (record,) = caplog.records
    assert str(bad) in record.getMessage()
    assert "invalid kernel name" in record.getMessage()


def test_load_kernelspec_raises_naming_the_problem(tmp_path):
    path = write_spec(tmp_path, "k", {"argv": "nope"})
    with pytest.raises(KernelSpecError, match="'argv' must be a non-empty list of strings"):
        load_kernelspec(path.parent)
    with pytest.raises(KernelSpecError, match="cannot read it"):
        load_kernelspec(tmp_path / "missing")


def test_directory_without_kernel_json_is_ignored_quietly(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other" / "kernel.json").mkdir(parents=True)  # a directory, not a file
    (tmp_path / "stray.json").write_text("{}")
    write_spec(tmp_path, "ok", good())
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    assert [kt.name for kt in find_kernelspecs([tmp_path])] == ["ok"]
    assert caplog.records == []


def test_the_bridges_kernelspecs_are_not_offered_whatever_their_name(tmp_path):
    """A kernelspec selecting kernel-hub-jupyter's provisioner is a kernel_hub type already."""
    bridged = {
        **good(),
        "metadata": {
            "kernel_provisioner": {
                "provisioner_name": "kernel-hub",
                "config": {"type_id": "docker/py311"},
            }
        },
    }
    write_spec(tmp_path, "kh-docker-py311", bridged)
    write_spec(tmp_path, "renamed", bridged)
    other = {**good(), "metadata": {"kernel_provisioner": {"provisioner_name": "other"}}}
    write_spec(tmp_path, "kh-not-ours", other)
    write_spec(tmp_path, "ok", good())
    assert [kt.name for kt in find_kernelspecs([tmp_path])] == ["kh-not-ours", "ok"]


def test_missing_directories_are_ignored(tmp_path):
    write_spec(tmp_path / "b", "ok", good())
    assert [kt.name for kt in find_kernelspecs([tmp_path / "a", tmp_path / "b"])] == ["ok"]


def test_results_are_sorted_by_name(tmp_path):
    for name in ["zeta", "alpha", "Mid"]:
        write_spec(tmp_path, name, good())
    assert [kt.name for kt in find_kernelspecs([tmp_path])] == ["alpha", "mid", "zeta"]


# ---- search path and precedence ----


def test_default_search_path_is_jupyter_path_then_user_env_and_system_dirs(jpath):
    first, second, user = jpath
    dirs = kernel_dirs()
    # JUPYTER_PATH always comes first; in a venv jupyter_core puts the env dir before the user's.
    assert dirs[:2] == [str(first), str(second)]
    assert str(user) in dirs[2:]
    assert os.path.join(sys.prefix, "share", "jupyter", "kernels") in dirs[2:]


def test_specs_are_found_in_jupyter_path_and_user_data_dir(jpath):
    first, second, user = jpath
    write_spec(first, "kh-one", good())
    write_spec(second, "kh-two", good())
    write_spec(user, "kh-user", good())

    types = by_name(find_kernelspecs())

    assert types["kh-one"].resource_dir == str(first / "kh-one")
    assert types["kh-two"].resource_dir == str(second / "kh-two")
    assert types["kh-user"].resource_dir == str(user / "kh-user")


def test_first_directory_with_a_name_wins(jpath):
    first, second, user = jpath
    write_spec(first, "kh-dup", good("from first"))
    write_spec(second, "kh-dup", good("from second"))
    write_spec(second, "kh-dup2", good("from second"))
    write_spec(user, "kh-dup2", good("from user"))
    # Names are case-insensitive, as in jupyter_client.
    write_spec(first, "KH-Case", good("from first"))
    write_spec(second, "kh-case", good("from second"))

    types = by_name(find_kernelspecs())

    assert types["kh-dup"].display_name == "from first"
    assert types["kh-dup2"].display_name == "from second"
    assert types["kh-case"].display_name == "from first"
    assert len([kt for kt in find_kernelspecs() if kt.name == "kh-dup"]) == 1


def test_jupyter_path_shadows_the_environments_python3(jpath):
    first, _, _ = jpath
    write_spec(first, "python3", good("mine"))
    assert by_name(find_kernelspecs())["python3"].display_name == "mine"


def test_malformed_spec_still_shadows_later_ones(jpath, caplog):
    first, second, _ = jpath
    bad = write_spec(first, "kh-shadow", "{")
    write_spec(second, "kh-shadow", good())
    caplog.set_level(logging.WARNING, logger=LOGGER)

    assert "kh-shadow" not in by_name(find_kernelspecs())
    assert str(bad) in caplog.text


def test_resource_dir_is_absolute_for_a_relative_jupyter_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_spec(tmp_path / "rel" / "kernels", "kh-rel", good())
    monkeypatch.setenv("JUPYTER_PATH", "rel")
    kt = by_name(find_kernelspecs())["kh-rel"]
    assert kt.resource_dir == str(tmp_path / "rel" / "kernels" / "kh-rel")
