"""``kernel-hub list``, ``plugins`` and ``config check``: what is installed and configured."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

__all__ = ["cmd_config", "cmd_list", "cmd_plugins", "print_table"]


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


async def cmd_list(args: argparse.Namespace) -> int:
    from ..hub import KernelHub

    hub = KernelHub()
    types = await hub.find_kernel_types()
    if args.json:
        print(json.dumps([t.to_dict() for t in types], indent=1))
        return 0
    if not types:
        print("no kernel types found; install a plugin or a kernelspec (see 'kernel-hub plugins')")
    else:
        print_table(
            [[t.id, t.provider, t.display_name, t.language] for t in types],
            ["ID", "PROVIDER", "DISPLAY NAME", "LANGUAGE"],
        )
    for type_id, why in sorted(hub.unavailable_types.items()):
        print(f"kernel-hub: {type_id} is not available: {why}", file=sys.stderr)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from ..plugins import HookRelay, make_plugin_manager

    infos = HookRelay(make_plugin_manager()).list_plugins()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=1))
        return 0
    rows = []
    for i in infos:
        what = f"FAILED: {i.error}" if i.error else ", ".join(i.hooks)
        rows.append([i.name, i.distribution or "-", i.version or "-", what])
    print_table(rows, ["NAME", "DISTRIBUTION", "VERSION", "HOOKS"])
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """``config check``: every table through its plugin's schema, with values and sources."""
    import os

    from ..plugins import core_schema, make_plugin_manager
    from ..plugins.config import ConfigCheck, config_path, load_config
    from ..plugins.schema import SCHEMA_ATTRIBUTE, ConfigSchema

    path = config_path()
    origin = "KERNEL_HUB_CONFIG" if os.environ.get("KERNEL_HUB_CONFIG") else "the default path"
    config = load_config()
    pm = make_plugin_manager()
    checks: list[ConfigCheck] = []
    notes: dict[str, str] = {}
    known = sorted(
        name
        for name, plugin in pm.list_name_plugin()
        if plugin is not None and not name.startswith("kernel_hub.")
    )
    for name, section in config.items():
        core = core_schema(name)
        if core is not None:  # read by the core itself: [culling], [pool], [transport]
            checks.extend(core.check(section, file=path))
            continue
        plugin = pm.get_plugin(name)
        if plugin is None:
            why = (
                "its plugin is blocked (KERNEL_HUB_DISABLE_PLUGINS)"
                if pm.is_blocked(name)
                else "no installed plugin owns it (a plugin installed elsewhere, or a typo? "
                f"known plugins: {', '.join(known)})"
            )
            checks.append(ConfigCheck(name, error=f"[{name}] is ignored: {why}"))
            continue
        schema = getattr(plugin, SCHEMA_ATTRIBUTE, None)
        if isinstance(schema, ConfigSchema):
            try:
                checks.extend(schema.check(section, file=path))
            except Exception as exc:  # noqa: BLE001 - a plugin's schema bug is one line too
                checks.append(ConfigCheck(name, error=f"the {name} plugin's check failed: {exc!r}"))
            continue
        if schema is not None:
            error = f"the {name} plugin's {SCHEMA_ATTRIBUTE} is {schema!r}, not a ConfigSchema"
            checks.append(ConfigCheck(name, error=error))
            continue
        notes[name] = f"not checked: the {name} plugin declares no {SCHEMA_ATTRIBUTE}"
        checks.append(ConfigCheck(name, {k: (v, "config") for k, v in section.items()}))
    bad = [c for c in checks if c.error]
    if args.json:
        out = {
            "path": str(path),
            "origin": origin,
            "exists": path.exists(),
            "tables": [c.to_dict() for c in checks],
        }
        print(json.dumps(out, indent=1, default=str))
        return 2 if bad else 0
    state = "" if path.exists() else " (missing: no tables)"
    print(f"config file {path}, from {origin}{state}")
    for c in checks:
        print(f"[{c.table}]  " + (f"ERROR: {c.error}" if c.error else notes.get(c.table, "ok")))
        width = max((len(k) for k in c.values), default=0)
        for key, (value, source) in c.values.items():
            doc = f"  # {c.docs[key]}" if c.docs.get(key) else ""
            print(f"  {key.ljust(width)} = {json.dumps(value, default=str)}  ({source}){doc}")
    if bad:
        print(f"{len(bad)} table(s) with errors: those tables are left out", file=sys.stderr)
    return 2 if bad else 0
