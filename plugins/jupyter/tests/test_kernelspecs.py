"""Kernelspecs for kernel_hub types: name mapping, contents, install/update/prune, the CLI.

The pure-logic tests write into tmp dirs; the CLI tests run the real
``kernel-hub jupyter`` commands and read the result back with jupyter_client's
own ``KernelSpecManager``, which is what JupyterLab and nbclient use.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_hub_jupyter.kernelspecs import (
    MANAGED_BY,
    build_spec,
    install,
    installed_specs,
    kernels_dir,
    spec_names,
    uninstall,
)

from kernel_hub import KernelType

VALID_NAME = re.compile(r"^[a-z0-9._-]+$")


def kt(provider: str, name: str, **kw) -> KernelType:
    return KernelType(provider=provider, name=name, language="python", **kw)


def test_names_are_valid_kernelspec_names_and_clashes_get_a_hash():
    names = spec_names(["docker/py3.11", "ssh/gpu-box", "a-b/c", "a/b-c"])
    assert names["docker/py3.11"] == "kh-docker-py3.11"
    assert names["ssh/gpu-box"] == "kh-ssh-gpu-box"
    assert names["a-b/c"] != names["a/b-c"]
    assert names["a-b/c"].startswith("kh-a-b-c-") and len(names["a-b/c"]) == len("kh-a-b-c-") + 6
    assert all(VALID_NAME.match(n) for n in names.values())
    assert spec_names(["a-b/c"]) == {"a-b/c": "kh-a-b-c"}  # stable while there is no clash


def test_spec_has_provisioner_stanza_relay_argv_and_type_fields():
    spec = build_spec(kt("docker", "py", display_name="Py in Docker", interrupt_mode="message"))
    assert spec["display_name"] == "Py in Docker"
    assert spec["language"] == "python"
    assert spec["interrupt_mode"] == "message"
    assert spec["metadata"]["kernel_provisioner"] == {
        "provisioner_name": "kernel-hub",
        "config": {"type_id": "docker/py", "pass_cwd": True},
    }
    assert spec["argv"][:3] == [sys.executable, "-m", "kernel_hub_jupyter.relay"]
    assert spec["argv"][3:] == ["--type", "docker/py", "-f", "{connection_file}"]
    remote = build_spec(kt("ssh", "box", metadata={"host": "box"}))
    assert remote["metadata"]["kernel_provisioner"]["config"]["pass_cwd"] is False


def test_install_updates_prunes_copies_logos_and_skips_spec_types(tmp_path):
    res = tmp_path / "res"
    res.mkdir()
    (res / "logo-64x64.png").write_bytes(b"\x89PNG fake")
    d = tmp_path / "kernels"
    types = [kt("docker", "a", resource_dir=str(res)), kt("ssh", "b"), kt("spec", "python3")]
    report = install(types, d)
    assert sorted(report.added) == ["kh-docker-a", "kh-ssh-b"]
    assert sorted(p.name for p in d.iterdir()) == ["kh-docker-a", "kh-ssh-b"]
    assert (d / "kh-docker-a" / "logo-64x64.png").read_bytes() == b"\x89PNG fake"
    assert not (d / "kh-ssh-b" / "logo-64x64.png").exists()
    again = install(types, d)
    assert sorted(again.unchanged) == ["kh-docker-a", "kh-ssh-b"] and not again.updated
    # The types change: one goes, one is renamed in display, one is new.
    (res / "logo-64x64.png").unlink()
    later = install([kt("docker", "a", display_name="A!", resource_dir=str(res)), kt("x", "c")], d)
    assert later.updated == ["kh-docker-a"] and later.added == ["kh-x-c"]
    assert later.removed == ["kh-ssh-b"]
    assert sorted(p.name for p in d.iterdir()) == ["kh-docker-a", "kh-x-c"]
    assert not (d / "kh-docker-a" / "logo-64x64.png").exists()
    assert json.loads((d / "kh-docker-a" / "kernel.json").read_text())["display_name"] == "A!"


def test_install_refuses_to_overwrite_a_foreign_kernelspec_and_prunes_only_its_own(tmp_path):
    d = tmp_path / "kernels"
    (d / "kh-docker-a").mkdir(parents=True)
    (d / "kh-docker-a" / "kernel.json").write_text('{"argv": ["x"], "display_name": "mine"}')
    (d / "python3").mkdir()
    (d / "python3" / "kernel.json").write_text('{"argv": ["y"], "display_name": "py"}')
    with pytest.raises(FileExistsError, match="kh-docker-a.*jupyter kernelspec remove"):
        install([kt("docker", "a")], d)
    install([kt("docker", "b")], d)
    assert uninstall(d) == ["kh-docker-b"]
    assert sorted(p.name for p in d.iterdir()) == ["kh-docker-a", "python3"]


def test_locations_mirror_jupyter_kernelspec_install(tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager()
    assert (
        kernels_dir(prefix=str(tmp_path))
        == Path(ksm._get_destination_dir("x", prefix=str(tmp_path))).parent
    )
    assert kernels_dir(user=True) == Path(ksm.user_kernel_dir)
    assert kernels_dir(sys_prefix=True) == Path(sys.prefix, "share", "jupyter", "kernels")
    assert kernels_dir() == Path(ksm._get_destination_dir("x")).parent
    with pytest.raises(ValueError, match="at most one"):
        kernels_dir(user=True, prefix="/p")


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kernel_hub", "jupyter", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_install_list_uninstall_with_jupyter_client_reading_the_specs(tmp_path):
    from jupyter_client.kernelspec import KernelSpecManager

    out = run_cli("install", "--prefix", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "kh-ipykernel-python3" in report["added"]
    assert not any(name.startswith("kh-spec-") for name in report["added"])
    env = {"JUPYTER_PATH": str(tmp_path / "share" / "jupyter")}
    listed = run_cli("list", "--json", env=env)
    assert {s["type_id"] for s in json.loads(listed.stdout)} >= {"ipykernel/python3"}
    os.environ["JUPYTER_PATH"], old = env["JUPYTER_PATH"], os.environ.get("JUPYTER_PATH")
    try:
        spec = KernelSpecManager().get_kernel_spec("kh-ipykernel-python3")
    finally:
        if old is None:
            del os.environ["JUPYTER_PATH"]
        else:
            os.environ["JUPYTER_PATH"] = old
    assert spec.metadata["kernel_hub"]["managed_by"] == MANAGED_BY
    assert spec.metadata["kernel_provisioner"]["provisioner_name"] == "kernel-hub"
    again = run_cli("install", "--prefix", str(tmp_path))
    assert "unchanged kh-ipykernel-python3" in " ".join(again.stdout.split())
    gone = run_cli("uninstall", "--prefix", str(tmp_path))
    assert gone.returncode == 0 and "kh-ipykernel-python3" in gone.stdout
    assert installed_specs([tmp_path / "share" / "jupyter" / "kernels"]) == []


def test_kernel_hub_list_does_not_offer_the_bridges_kernelspecs_as_spec_types(tmp_path):
    """Issue #22 item 7: after 'install', each bridged type is listed once, under its own id.

    A copy under a name without the ``kh-`` prefix is left out too: the spec
    provider recognises the bridge's kernelspecs by their provisioner metadata.
    """
    out = run_cli("install", "--prefix", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)["added"]
    assert "kh-ipykernel-python3" in added
    kernels = tmp_path / "share" / "jupyter" / "kernels"
    shutil.copytree(kernels / "kh-ipykernel-python3", kernels / "renamed-bridge")
    listed = subprocess.run(
        [sys.executable, "-m", "kernel_hub", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JUPYTER_PATH": str(tmp_path / "share" / "jupyter")},
    )
    assert listed.returncode == 0, listed.stderr
    ids = {t["id"] for t in json.loads(listed.stdout)}
    assert "ipykernel/python3" in ids
    ours = {f"spec/{name}" for name in [*added, "renamed-bridge"]}
    assert ids & ours == set()


def test_provisioner_entry_point_is_what_jupyter_client_loads():
    import importlib.metadata

    from jupyter_client.provisioning import KernelProvisionerFactory
    from kernel_hub_jupyter.provisioner import KernelHubProvisioner

    assert "kernel-hub" in KernelProvisionerFactory.instance().get_provisioner_entries()
    (ep,) = importlib.metadata.entry_points(
        group="jupyter_client.kernel_provisioners", name="kernel-hub"
    )
    assert ep.load() is KernelHubProvisioner


def test_readme_section_commands_work(tmp_path):
    """The root README's two commands: pip (done here), then install --user (run for real)."""
    readme = Path(__file__).resolve().parents[3] / "README.md"
    text = readme.read_text()
    section = text.split("## Use kernel_hub kernels in JupyterLab, nbclient, papermill, VS Code")[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].split() for line in block.strip().splitlines()]
    assert commands == [
        ["pip", "install", "./", "./plugins/jupyter"],
        ["kernel-hub", "jupyter", "install", "--user"],
    ]
    env = {"JUPYTER_DATA_DIR": str(tmp_path)}  # --user writes to the user's Jupyter data dir
    out = run_cli(*commands[1][2:], env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "kernels" / "kh-ipykernel-python3" / "kernel.json").is_file()
    assert "kernel-hub jupyter uninstall --user" in section
    assert run_cli("uninstall", "--user", env=env).returncode == 0
    assert not (tmp_path / "kernels" / "kh-ipykernel-python3").exists()
    assert (readme.parent / "docs/images/jupyterlab-bridge.png").is_file()
