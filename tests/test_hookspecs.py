"""Meta-tests: every hook is documented in docs/hooks.md and has a test_hook_<name> test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kernel_hub.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


def hook_specs():
    pm = make_plugin_manager(load_entrypoints=False)
    return {
        name: caller.spec
        for name, caller in vars(pm.hook).items()
        if not name.startswith("_") and caller.spec is not None
    }


def test_the_four_hooks_exist():
    assert set(hook_specs()) == {"find_kernel_types", "launch", "make_manager", "restart_policy"}


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_hook_is_documented_with_its_signature(name):
    spec = hook_specs()[name]
    heading = f"## {name}({', '.join(spec.argnames)})"
    assert heading in (ROOT / "docs" / "hooks.md").read_text(), f"docs/hooks.md lacks {heading!r}"
    doc = spec.function.__doc__ or ""
    assert "Called by" in doc and "**Example:**" in doc
    assert ("Stops at first non-None result" in doc) or ("All results are collected" in doc)


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_hook_has_a_test(name):
    pattern = re.compile(rf"def test_hook_{name}(\b|_)")
    sources = [*ROOT.glob("tests/**/test_*.py"), *ROOT.glob("plugins/*/tests/test_*.py")]
    assert any(pattern.search(p.read_text()) for p in sources), f"no test_hook_{name} test"
