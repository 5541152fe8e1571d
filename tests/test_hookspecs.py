"""Meta-tests: docs/hooks.md documents every hook and the KernelManager contract as they are.

Each hook's section must carry its heading (built from ``spec.argnames``) and a
**Contract** line built from the hookspec itself: the annotated signature, the
return annotation and how results combine. So adding a hook, or changing one's
arguments, types or ``firstresult`` flag, fails here until the doc follows.
Likewise every member of :class:`KernelManager` needs a row, with its signature,
in the contract table, and abstract methods must be marked so.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from kernel_hub.contract.manager import KernelManager
from kernel_hub.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
HOOKS_MD = ROOT / "docs" / "hooks.md"


def hook_specs():
    pm = make_plugin_manager(load_entrypoints=False)
    return {
        name: caller.spec
        for name, caller in vars(pm.hook).items()
        if not name.startswith("_") and caller.spec is not None
    }


def contract_line(name, spec) -> str:
    """Return the ``**Contract:**`` line the doc must hold for hook *name*."""
    ann = spec.function.__annotations__  # strings: hookspecs.py uses postponed annotations
    args = ", ".join(f"{a}: {ann.get(a, '?')}" for a in spec.argnames)
    modes = ["firstresult" if spec.opts.get("firstresult") else "all results"]
    modes += [opt for opt in ("historic",) if spec.opts.get(opt)]
    return f"**Contract:** `{name}({args}) -> {ann.get('return', '?')}` ({', '.join(modes)})"


def doc_sections() -> dict[str, str]:
    """Return ``{heading: body}`` of the ``## `` sections of docs/hooks.md."""
    text = HOOKS_MD.read_text()
    parts = re.split(r"^(## .*)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_the_four_hooks_exist():
    assert set(hook_specs()) == {"find_kernel_types", "launch", "make_manager", "restart_policy"}


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_hook_is_documented_with_its_signature(name):
    spec = hook_specs()[name]
    heading = f"## {name}({', '.join(spec.argnames)})"
    sections = doc_sections()
    assert heading in sections, f"docs/hooks.md lacks the section {heading!r}"
    body = sections[heading]
    contract = contract_line(name, spec)
    assert contract in body, f"the {heading!r} section must state\n{contract}\n(the hook changed?)"
    assert "**Called by**" in body and "**Returns**" in body and "```python" in body
    if spec.opts.get("firstresult"):
        assert "stops at the first non-`None` result" in body
    else:
        assert "all are collected" in body
    doc = spec.function.__doc__ or ""
    assert "Called by" in doc and "**Example:**" in doc
    combine = "Stops at first non-None result" if spec.opts.get("firstresult") else "All results"
    assert combine in doc, f"the {name} hookspec docstring must say {combine!r}"


def test_no_section_for_a_hook_that_does_not_exist():
    specs = hook_specs()
    for heading in doc_sections():
        m = re.match(r"## (\w+)\(", heading)
        if m:
            assert m.group(1) in specs, f"docs/hooks.md documents a removed hook: {heading!r}"


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_hook_has_a_test(name):
    pattern = re.compile(rf"def test_hook_{name}(\b|_)")
    sources = [
        *ROOT.glob("tests/**/test_*.py"),
        *ROOT.glob("plugins/*/tests/test_*.py"),
        *ROOT.glob("examples/*/tests/test_*.py"),
    ]
    assert any(pattern.search(p.read_text()) for p in sources), f"no test_hook_{name} test"


# ---- the KernelManager contract ----


def member_signature(name: str) -> str:
    """Return the first cell of *name*'s row in the KernelManager table (``|`` escaped)."""
    return _member_signature(name).replace("|", "\\|")


def _member_signature(name: str) -> str:
    member = inspect.getattr_static(KernelManager, name)
    if isinstance(member, property):
        return f"`{name} -> {member.fget.__annotations__['return']}`"
    if not callable(member):
        return f"`{name}: {KernelManager.__annotations__[name]}`"
    params = []
    for p in list(inspect.signature(member).parameters.values())[1:]:  # skip self
        text = f"{p.name}: {p.annotation}"
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        params.append(text)
    prefix = "async " if inspect.iscoroutinefunction(member) else ""
    ret = inspect.signature(member).return_annotation
    return f"`{prefix}{name}({', '.join(params)}) -> {ret}`"


def manager_rows() -> dict[str, list[str]]:
    """Return ``{first cell: cells}`` of the KernelManager contract table."""
    text = HOOKS_MD.read_text().split("# The KernelManager contract", 1)[1]
    rows = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows[cells[0]] = cells
    return rows


PUBLIC_MEMBERS = sorted(
    n for n in vars(KernelManager) if not n.startswith("_") and n != "type_id"
) + ["type_id"]


def test_every_abstract_method_is_in_the_contract_table():
    rows = manager_rows()
    for name in sorted(KernelManager.__abstractmethods__):
        sig = member_signature(name)
        assert sig in rows, f"docs/hooks.md: no KernelManager row {sig!r} (changed signature?)"
        assert rows[sig][1] == "yes", f"{name} is abstract: its row must say 'yes'"


@pytest.mark.parametrize("name", PUBLIC_MEMBERS)
def test_manager_member_has_a_row(name):
    rows = manager_rows()
    sig = member_signature(name)
    assert sig in rows, f"docs/hooks.md: no KernelManager row {sig!r} (new or changed member?)"
    _, abstract, called_by, behaviour = rows[sig]
    assert abstract.startswith("yes" if name in KernelManager.__abstractmethods__ else "no")
    assert called_by and behaviour


def test_no_row_for_a_member_that_does_not_exist():
    expected = {member_signature(n) for n in PUBLIC_MEMBERS}
    assert set(manager_rows()) <= expected, set(manager_rows()) - expected
