"""Pure-logic tests of the docker plugin: config and label parsing, owners, exit statuses, hooks.

The real-engine counterparts are in test_docker_kernels.py.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import subprocess
import sys

import kernel_hub_docker.plugin as plugin
import pytest
from kernel_hub_docker import DEFAULT_ARGV, DockerManager, DockerOptions, EngineUnavailable
from kernel_hub_docker.images import IMAGE_LABEL, options_of, types_from_config, types_from_images
from kernel_hub_docker.manager import exit_status_of
from kernel_hub_docker.owner import (
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    LABEL_OWNER_START,
    owner_labels,
    owner_state,
)

from kernel_hub.contract.errors import ConfigError
from kernel_hub.plugins import make_plugin_manager

# ---- config ----


def test_config_tables_become_types_and_scalars_are_settings():
    (kt,) = types_from_config(
        {
            "ping_timeout": 2,
            "py": {
                "image": "python:3.11",
                "cpus": 1.5,
                "memory": "1g",
                "mounts": ["/data:/data:ro"],
                "env": {"A": "1"},
                "mount_cwd": True,
            },
        }
    )
    assert kt.id == "docker/py"
    assert kt.argv == DEFAULT_ARGV
    assert kt.language == "python"
    assert kt.env == {"A": "1"}
    assert kt.display_name == "py (Docker python:3.11)"
    opts = options_of(kt)
    assert opts == DockerOptions(
        image="python:3.11", cpus=1.5, memory="1g", mounts=("/data:/data:ro",), mount_cwd=True
    )
    json.dumps(kt.to_dict())  # metadata stays JSON-able


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({}, "needs 'image': the image to run"),
        ({"image": ""}, "'image' must name a Docker image"),
        ({"image": "x", "cpus": -1}, "'cpus' must be positive"),
        ({"image": "x", "mounts": ["relative:/x"]}, "absolute paths"),
        ({"image": "x", "colour": "red"}, "unknown field(s) 'colour'"),
        ({"image": "x", "pull": "yes"}, "'pull' must be true or false"),
        ({"image": "x", "argv": "python3 -m ipykernel"}, "'argv' must be a list of strings"),
        ({"image": "x", "argv": []}, "'argv' must be a non-empty list"),
        ({"image": "x", "metadata": "curve"}, "'metadata' must be a table"),
        (
            {"image": "x", "metadata": {"supported_encryption": ["curv"]}},
            "'supported_encryption' may only list 'curve' (CurveZMQ, ipykernel >= 7.4), not 'curv'",
        ),
        (
            {"image": "x", "metadata": {"supported_encryption": [1]}},
            "'supported_encryption' must be a list of strings",
        ),
        ({"image": "x", "metadata": {"docker": {}}}, "may not hold 'docker'"),
    ],
)
def test_bad_config_tables_are_skipped_with_a_warning_naming_them(table, message, caplog):
    assert types_from_config({"bad": table, "good": {"image": "y"}})[0].id == "docker/good"
    assert "[docker.bad]" in caplog.text
    assert message in caplog.text


def test_options_parse_raises_config_error():
    with pytest.raises(ConfigError, match=r"\[docker.x\].*'memory'"):
        DockerOptions.parse({"image": "i", "memory": [1]}, where="[docker.x]")


def test_launch_params_override_type_options():
    opts = DockerOptions(image="i", cpus=1.0, memory="1g")
    merged = opts.merged({"memory": "2g", "unrelated": 1})
    assert (merged.cpus, merged.memory) == (1.0, "2g")
    assert opts.merged({}) is opts
    with pytest.raises(ConfigError, match="launch params"):
        opts.merged({"cpus": "many"})


# ---- CurveZMQ: declared as a kernelspec does, in metadata (issue 24) ----


def test_a_table_or_label_declares_curve_in_its_metadata_as_a_kernelspec_does():
    from kernel_hub.provider import supports_curve

    metadata = {"supported_encryption": ["curve"], "debugger": True}
    (configured,) = types_from_config({"c": {"image": "i", "metadata": metadata}})
    label = {IMAGE_LABEL: json.dumps({"name": "l", "metadata": metadata})}
    (labelled,) = types_from_images([("img:1", label)])
    for kt in (configured, labelled):
        assert supports_curve(kt)
        assert kt.metadata == {**metadata, "docker": kt.metadata["docker"]}
        assert options_of(kt).image in ("i", "img:1")  # the container options stay apart
    (plain,) = types_from_config({"p": {"image": "i"}})
    assert not supports_curve(plain) and set(plain.metadata) == {"docker"}


@pytest.mark.parametrize(
    ("source", "fix"),
    [
        ("config", 'add metadata = { supported_encryption = ["curve"] } to its [docker.k] table'),
        ("label", "kernel-hub docker label img:1 --supported-encryption curve"),
    ],
)
def test_required_without_a_declaration_says_where_to_declare_it(source, fix):
    from kernel_hub_docker.launch import encrypted

    from kernel_hub import LaunchError, LaunchRequest

    if source == "config":
        (kt,) = types_from_config({"k": {"image": "img:1"}})
    else:
        (kt,) = types_from_images([("img:1", {IMAGE_LABEL: json.dumps({"name": "k"})})])
    with pytest.raises(LaunchError) as info:
        encrypted(kt, LaunchRequest(kernel_id="k1", transport_encryption="required"))
    message = str(info.value)
    assert message.startswith("kernel docker/k does not declare CurveZMQ support")
    assert fix in message and "\n" not in message
    assert not encrypted(kt, LaunchRequest(kernel_id="k1"))  # auto: plain


def test_the_label_command_puts_curve_where_a_kernelspec_has_it():
    from kernel_hub_docker.labelling import label_value

    assert label_value(name="n", supported_encryption=["curve"]) == {
        "name": "n",
        "metadata": {"supported_encryption": ["curve"]},
    }
    assert label_value(name="n") == {"name": "n"}


# ---- labels ----


def test_labelled_images_become_types():
    label = {"name": "ds", "display_name": "Data science", "argv": ["python3", "-m", "k"]}
    types = types_from_images(
        [
            ("registry.example/team/ds-kernel:1.0", {IMAGE_LABEL: json.dumps(label)}),
            ("registry.example/team/plain:2", {IMAGE_LABEL: "{}"}),
            ("sha256:abc", {"other": "x"}),
        ]
    )
    assert [kt.id for kt in types] == ["docker/ds", "docker/plain"]
    assert types[0].argv == ("python3", "-m", "k")
    assert types[0].display_name == "Data science"
    assert options_of(types[0]).image == "registry.example/team/ds-kernel:1.0"
    assert options_of(types[0]).source == "label"
    assert types[1].argv == DEFAULT_ARGV


def test_bad_label_is_skipped_with_a_warning(caplog):
    assert types_from_images([("img:1", {IMAGE_LABEL: "not json"})]) == []
    assert "img:1" in caplog.text and IMAGE_LABEL in caplog.text


# ---- owners ----


def test_owner_labels_name_this_live_process():
    labels = owner_labels()
    assert labels[LABEL_OWNER_PID] == str(os.getpid())
    assert owner_state(labels) == "alive"


def test_owner_is_dead_when_its_pid_is_gone_or_reused():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    labels = owner_labels()
    assert owner_state({**labels, LABEL_OWNER_PID: str(proc.pid)}) == "dead"
    # Our pid with another start token: the pid was reused by a new process.
    assert owner_state({**labels, LABEL_OWNER_START: "other-boot/1"}) == "dead"


def test_owner_on_another_host_or_unlabelled_is_unknown():
    assert owner_state({**owner_labels(), LABEL_OWNER_HOST: "elsewhere"}) == "unknown"
    assert owner_state({}) == "unknown"


# ---- manager bits ----


@pytest.mark.parametrize(("code", "status"), [(0, 0), (1, 1), (137, -9), (130, -2), (None, None)])
def test_exit_status_of(code, status):
    assert exit_status_of(code) == status


def test_manager_state_round_trip_and_repr():
    state = {"container_id": "a" * 64, "temp_dir": "/tmp/x", "kernel_id": "k", "image": "i"}
    manager = DockerManager.from_state(state, type_id="docker/py")
    assert manager.describe() == {**state, "container_name": ""}
    assert repr(manager) == f"<DockerManager docker/py [RUNNING id={'a' * 12}]>"
    with pytest.raises(ValueError, match="container_id"):
        DockerManager.from_state({})


# ---- hooks ----


def test_hooks_are_plain_functions():
    for hook in (plugin.find_kernel_types, plugin.launch, plugin.make_manager):
        assert not inspect.iscoroutinefunction(hook)


def test_hook_make_manager_builds_a_docker_manager():
    kt = types_from_config({"py": {"image": "i"}})[0]
    # Called as the hub calls it: through pluggy, with every argument of the hook.
    pm = make_plugin_manager(load_entrypoints=False, plugins=[plugin])
    manager = pm.hook.make_manager(
        hub=None, kernel_type=kt, connection_info={}, state={"container_id": "c1"}
    )
    assert isinstance(manager, DockerManager)
    assert manager.container_id == "c1"
    assert manager.type_id == "docker/py"


def test_entry_points_load():
    (ep,) = [e for e in importlib.metadata.entry_points(group="kernel_hub") if e.name == "docker"]
    assert ep.load() is plugin
    assert ep.dist is not None and ep.dist.name == "kernel-hub-docker"
    assert make_plugin_manager().get_plugin("docker") is plugin
    (cli,) = [
        e for e in importlib.metadata.entry_points(group="kernel_hub.cli") if e.name == "docker"
    ]
    assert callable(cli.load())


def test_cli_module_does_not_import_docker():
    code = "import sys, kernel_hub.cli as c; c.build_parser(); print('docker' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.asyncio
async def test_manager_says_how_to_start_the_engine_when_it_is_gone(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/kernel-hub-test/docker.sock")
    manager = DockerManager("c1", type_id="docker/py")
    with pytest.raises(EngineUnavailable, match=r"not reachable.*dockerd.*DOCKER_HOST"):
        await manager.is_alive()
    with pytest.raises(EngineUnavailable):
        await manager.signal(2)
