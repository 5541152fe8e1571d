"""The kernel_hub configuration file: one TOML file, one table per plugin.

Location: ``$KERNEL_HUB_CONFIG`` if set, else
``$XDG_CONFIG_HOME/kernel-hub/config.toml`` (``~/.config/kernel-hub/config.toml``).
Precedence, everywhere: call arguments > kernel-type config > environment > defaults.

.. code-block:: toml

    [ssh.gpu-box]          # the "ssh" plugin's table; one sub-table per kernel type
    host = "gpu-box"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["config_path", "load_config"]


def config_path() -> Path:
    """Return the path of the kernel_hub config file (it need not exist)."""
    env = os.environ.get("KERNEL_HUB_CONFIG")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "kernel-hub" / "config.toml"


def load_config(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read the config file; a missing file is an empty config.

    :raises ConfigError: naming the file and the problem when it is not valid TOML
        or a plugin's entry is not a table.
    """
    p = Path(path) if path is not None else config_path()
    try:
        f = open(p, "rb")
    except FileNotFoundError:
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
