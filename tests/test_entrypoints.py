"""The entry-point reader: the same answers as importlib.metadata, without importing it."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kernel_hub.plugins.entrypoints import EntryPoint, entry_points, normalize_name


def _key(ep) -> tuple[str, str, str, str | None, str | None]:
    dist = ep.dist
    return (
        ep.name,
        ep.value,
        ep.group,
        dist.name if dist else None,
        dist.version if dist else None,
    )


def _same_as_importlib(group: str) -> list[tuple]:
    """Assert that both readers find the same entry points of *group*; return them."""
    mine = sorted(_key(ep) for ep in entry_points(group))
    theirs = sorted(_key(ep) for ep in importlib.metadata.entry_points(group=group))
    assert mine == theirs
    return mine


def _dist(
    where: Path,
    folder: str,
    entry_points_txt: str | None,
    *,
    headers: str | None = None,
    metadata_file: str = "METADATA",
) -> Path:
    path = where / folder
    path.mkdir(parents=True)
    if headers is not None:
        (path / metadata_file).write_text(headers + "\nThe description, which is not a header.\n")
    if entry_points_txt is not None:
        (path / "entry_points.txt").write_text(entry_points_txt)
    return path


@pytest.mark.parametrize("group", ["kernel_hub", "kernel_hub.cli", "console_scripts"])
def test_installed_entry_points_match_importlib_metadata(group):
    found = _same_as_importlib(group)
    if group == "kernel_hub":
        assert {"ipykernel", "spec"} <= {name for name, *_ in found}
        spec = next(f for f in found if f[0] == "spec")
        assert spec[3] == "kernel-hub-spec" and spec[4]  # the name as METADATA spells it


def test_shadowing_egg_info_and_versions_follow_importlib_metadata(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    _dist(
        first,
        "Kh_Shadow-1.0.dist-info",
        "[kernel_hub]\nshadow = kh_shadow.one\n",
        headers="Metadata-Version: 2.1\nName: kh.shadow\nVersion: 1.0",
    )
    _dist(
        second,
        "kh_shadow-2.0.dist-info",
        "[kernel_hub]\nshadow = kh_shadow.two\nextra = kh_shadow.extra\n",
        headers="Metadata-Version: 2.1\nName: kh-shadow\nVersion: 2.0",
    )
    # A first copy without entry points still hides the second copy's.
    _dist(first, "kh_quiet-1.0.dist-info", None, headers="Name: kh-quiet\nVersion: 1.0")
    _dist(second, "kh_quiet-2.0.dist-info", "[kernel_hub]\nquiet = kh_quiet.plugin\n")
    _dist(
        first,
        "kh_legacy.egg-info",
        "# a comment\n[console_scripts]\nkh-legacy = kh_legacy:main\n\n[kernel_hub]\n"
        "legacy = kh_legacy.plugin:hooks [extra1]\n",
        headers="Metadata-Version: 1.0\nName: kh-legacy\nVersion: 0.3",
        metadata_file="PKG-INFO",
    )
    (first / "kh_single.egg-info").write_text("Name: kh-single\n")  # an old single-file egg-info
    monkeypatch.setattr(sys, "path", [str(first), str(tmp_path / "missing"), str(second)])

    found = _same_as_importlib("kernel_hub")
    assert found == [
        ("legacy", "kh_legacy.plugin:hooks [extra1]", "kernel_hub", "kh-legacy", "0.3"),
        ("shadow", "kh_shadow.one", "kernel_hub", "kh.shadow", "1.0"),
    ]
    assert [ep.name for ep in entry_points("console_scripts")] == ["kh-legacy"]
    assert entry_points("no_such_group") == []


def test_without_metadata_the_folder_names_the_distribution(tmp_path, monkeypatch):
    # importlib.metadata cannot name such a broken distribution; the folder still can.
    _dist(tmp_path, "kh_bare-0.9.dist-info", "[kernel_hub]\nbare = kh_bare\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    (ep,) = entry_points("kernel_hub")
    assert ep.dist is not None and (ep.dist.name, ep.dist.version) == ("kh_bare", "0.9")
    assert repr(ep.dist).startswith("<Distribution kh_bare 0.9 [")


def test_malformed_entry_points_txt_is_a_warning_naming_the_file(tmp_path, monkeypatch, caplog):
    folder = _dist(
        tmp_path,
        "kh_broken-1.0.dist-info",
        "[kernel_hub]\nthis line has no equals sign\ngood = kh_good.plugin\n = no_name\n",
        headers="Name: kh-broken\nVersion: 1.0",
    )
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    with caplog.at_level(logging.WARNING, "kernel_hub.plugins"):
        found = entry_points("kernel_hub")
    assert [(ep.name, ep.value) for ep in found] == [("good", "kh_good.plugin")]
    source = str(folder / "entry_points.txt")
    assert f"{source}, line 2: 'this line has no equals sign'" in caplog.text
    assert f"{source}, line 4" in caplog.text
    assert "importlib.metadata" not in caplog.text  # no fallback for a bad line


def test_undecodable_entry_points_txt_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    folder = _dist(tmp_path, "kh_latin-1.0.dist-info", None)
    (folder / "entry_points.txt").write_bytes(b"[kernel_hub]\nn\xe9 = kh_latin\n")
    _dist(tmp_path, "kh_fine-1.0.dist-info", "[kernel_hub]\nfine = kh_fine\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    with caplog.at_level(logging.WARNING, "kernel_hub.plugins"):
        assert [ep.name for ep in entry_points("kernel_hub")] == ["fine"]
    assert f"cannot read {folder / 'entry_points.txt'}" in caplog.text


def test_a_zip_on_sys_path_is_read_by_importlib_metadata(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    _dist(
        plain,
        "kh_plain-1.0.dist-info",
        "[kernel_hub]\nplain = kh_plain\n",
        headers="Name: kh-plain\nVersion: 1.0",
    )
    archive = tmp_path / "zipped.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("kh_zipped-2.0.dist-info/METADATA", "Name: kh-zipped\nVersion: 2.0\n\n")
        zf.writestr("kh_zipped-2.0.dist-info/entry_points.txt", "[kernel_hub]\nzipped = kh_z\n")
    monkeypatch.setattr(sys, "path", [str(plain), str(archive)])
    found = sorted(_key(ep) for ep in entry_points("kernel_hub"))
    assert found == [
        ("plain", "kh_plain", "kernel_hub", "kh-plain", "1.0"),
        ("zipped", "kh_z", "kernel_hub", "kh-zipped", "2.0"),
    ]
    assert all(isinstance(ep, importlib.metadata.EntryPoint) for ep in entry_points("kernel_hub"))


def test_an_egg_on_sys_path_is_read_by_importlib_metadata(tmp_path, monkeypatch):
    egg = tmp_path / "kh_egg-1.0-py3.11.egg"
    _dist(
        egg,
        "EGG-INFO",
        "[kernel_hub]\negg = kh_egg.plugin\n",
        headers="Name: kh-egg\nVersion: 1.0",
        metadata_file="PKG-INFO",
    )
    monkeypatch.setattr(sys, "path", [str(egg)])
    assert [_key(ep) for ep in entry_points("kernel_hub")] == [
        ("egg", "kh_egg.plugin", "kernel_hub", "kh-egg", "1.0")
    ]


def test_a_distribution_finder_on_meta_path_is_honoured(tmp_path, monkeypatch):
    folder = _dist(tmp_path, "kh_found-1.0.dist-info", "[kernel_hub]\nfound = kh_found\n")

    class Finder:
        """A meta-path finder that provides one distribution from outside sys.path."""

        @staticmethod
        def find_spec(*args):
            return None

        @staticmethod
        def find_distributions(context=None):
            return [importlib.metadata.PathDistribution(folder)]

    monkeypatch.setattr(sys, "meta_path", [*sys.meta_path, Finder])
    assert "found" in {ep.name for ep in entry_points("kernel_hub")}


def test_entry_point_load_and_parts():
    ep = EntryPoint("join", "os.path:join [speed]", "g")
    assert (ep.module, ep.attr) == ("os.path", "join")
    assert ep.load() is os.path.join
    assert EntryPoint("m", "os.path", "g").load() is os.path
    assert EntryPoint("j", "json:JSONDecoder.decode", "g").load() is json.JSONDecoder.decode
    assert ep == EntryPoint("join", "os.path:join [speed]", "g") and ep.dist is None
    assert repr(ep) == "EntryPoint(name='join', value='os.path:join [speed]', group='g')"
    with pytest.raises(ModuleNotFoundError):
        EntryPoint("x", "kh_no_such_module_xyz:f", "g").load()


@pytest.mark.parametrize(
    ("name", "normalized"),
    [("kernel-hub-spec", "kernel_hub_spec"), ("Kernel.Hub__Spec", "kernel_hub_spec"), ("a", "a")],
)
def test_normalize_name(name, normalized):
    assert normalize_name(name) == normalized


def test_importing_kernel_hub_and_loading_plugins_leaves_importlib_metadata_out():
    # A fresh process: this one has imported importlib.metadata long ago. Only the
    # built-in providers load, so that another plugin's own imports cannot interfere.
    others = {ep.name for ep in importlib.metadata.entry_points(group="kernel_hub")}
    env = {**os.environ, "KERNEL_HUB_DISABLE_PLUGINS": ",".join(others - {"spec", "ipykernel"})}
    code = """
import sys
import kernel_hub
lazy = [m for m in ("kernel_hub.managers.remote", "kernel_hub.run", "tomllib") if m in sys.modules]
hub = kernel_hub.KernelHub()
loaded = sorted(hub.pm.distributions)
from kernel_hub import NannyManager, run_kernel
print(repr((loaded, lazy, "importlib.metadata" in sys.modules, NannyManager.__name__)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    loaded, lazy, metadata_imported, nanny = eval(out.stdout)
    assert loaded == ["ipykernel", "spec"]
    assert lazy == []
    assert metadata_imported is False
    assert nanny == "NannyManager"
