"""The kernel_hub configuration file: one TOML file, one table per plugin.

Location: ``$KERNEL_HUB_CONFIG`` if set, else
``$XDG_CONFIG_HOME/kernel-hub/config.toml`` (``~/.config/kernel-hub/config.toml``).
Precedence, everywhere: call arguments > kernel-type config > environment > defaults.
A ``$KERNEL_HUB_CONFIG`` that names a missing file is an error (the user asked
for that file); the default path may be absent. A top-level table that no
installed plugin owns is only logged at debug level (one file may serve several
environments, each with other plugins installed); ``kernel-hub config check``
reports it, naming the known plugins.

A plugin declares what its table holds with a
:class:`~kernel_hub.plugins.schema.ConfigSchema` (``kernel_hub.provider``), which
checks its tables the same way for every plugin and gives
``kernel-hub config check`` one :class:`ConfigCheck` per table.

.. code-block:: toml

    [ssh.gpu-box]          # the "ssh" plugin's table; one sub-table per kernel type
    host = "gpu-box"
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "CORE_TABLES",
    "ConfigCheck",
    "config_path",
    "load_config",
    "note_unknown_tables",
    "unknown_tables",
]

log = logging.getLogger("kernel_hub.config")

#: Top-level tables the core reads itself; no plugin owns them (``plugins/culling.py``,
#: ``plugins/pools.py``, ``plugins/transport.py``; ``kernel_hub.plugins.core_schema`` gives
#: their schemas).
CORE_TABLES = ("culling", "pool", "transport")

#: Sources of an effective value, as :class:`ConfigCheck` names them.
SOURCES = ("config", "environment", "default")


@dataclass(frozen=True)
class ConfigCheck:
    """What a plugin made of one table of the config file.

    :param table: the table's dotted name, e.g. ``"ssh.gpu-box"`` or ``"docker"``.
    :param values: setting name -> ``(effective value, source)``; the source is
        ``"config"``, ``"default"``, or ``"environment"`` / ``"environment VAR"``.
    :param error: one line naming the bad field and the fix, when the plugin
        rejects (and skips) the table; ``values`` may then be empty.
    :param docs: setting name -> its doc line.
    """

    table: str
    values: Mapping[str, tuple[Any, str]] = field(default_factory=dict)
    error: str | None = None
    docs: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return JSON-able data (``kernel-hub config check --json``)."""
        return {
            "table": self.table,
            "values": {k: {"value": v, "source": src} for k, (v, src) in self.values.items()},
            "error": self.error,
            "docs": dict(self.docs),
        }


def config_path() -> Path:
    """Return the path of the kernel_hub config file (it need not exist)."""
    env = os.environ.get("KERNEL_HUB_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kernel-hub" / "config.toml"


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read the config file; a missing file is an empty config.

    :raises ConfigError: naming the file and the problem when it is not valid TOML,
        a plugin's entry is not a table, or ``$KERNEL_HUB_CONFIG`` names a missing file.
    """
    p = Path(path) if path is not None else config_path()
    try:
        f = open(p, "rb")
    except FileNotFoundError:
        if path is None and os.environ.get("KERNEL_HUB_CONFIG"):
            raise ConfigError(
                f"KERNEL_HUB_CONFIG names {str(p)!r}, which does not exist; create it, "
                "or unset KERNEL_HUB_CONFIG to use the default config file"
            ) from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read kernel_hub config {str(p)!r}: {exc}") from None
    # Imported here: most hosts have no config file, and tomllib is four modules.
    import tomllib

    try:
        with f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read kernel_hub config {str(p)!r}: {exc}") from None
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ConfigError(
                f"kernel_hub config {str(p)!r}: [{key}] must be a table of the {key!r} plugin, "
                f"not {type(value).__name__}"
            )
    return data


def unknown_tables(config: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """Return the top-level tables of *config* that no plugin in *known* owns."""
    names = set(known)
    return sorted(str(key) for key in config if key not in names)


_noted: set[tuple[str, str]] = set()


def note_unknown_tables(
    config: Mapping[str, Any], known: Iterable[str], core: Iterable[str] = ()
) -> list[str]:
    """Log each unknown top-level table once per process, at debug level; return them.

    :param known: the names of the installed plugins (each owns its table).
    :param core: the tables the core reads itself (``culling``, ``pool``).

    Not a warning: one config file may serve two environments, and a table of a
    plugin installed only in the other one is not a mistake here. ``kernel-hub
    config check`` reports it (exit 2), where a typo is looked for.
    """
    names = sorted(set(known))
    unknown = unknown_tables(config, [*names, *core])
    path = str(config_path())
    for table in unknown:
        if (path, table) in _noted:
            continue
        _noted.add((path, table))
        log.debug(
            "kernel_hub config %s: no installed plugin owns the table [%s]; it is ignored. "
            "Known plugins: %s (a typo? 'kernel-hub plugins' lists them)",
            path,
            table,
            ", ".join(n for n in names if not n.startswith("kernel_hub.")) or "none",
        )
    return unknown
