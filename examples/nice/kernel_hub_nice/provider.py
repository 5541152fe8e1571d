"""The nice provider's logic: this Python's ipykernel, started under ``nice -n N``."""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import ConfigError, KernelType

if TYPE_CHECKING:
    from collections.abc import Mapping

PROVIDER = "nice"


def find_nice_types(config: Mapping[str, Any]) -> list[KernelType]:
    """Offer ``nice/python3``, with N from the ``[nice]`` config table (default 10)."""
    if importlib.util.find_spec("ipykernel") is None:
        return []  # nothing to offer is not an error
    n = config.get("niceness", 10)
    if type(n) is not int or not 0 <= n <= 19:  # type(): True is an int, but not a niceness
        raise ConfigError(f"[nice] niceness must be an integer from 0 to 19, not {n!r}")
    python = (sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}")
    argv = ("nice", "-n", str(n), *python)
    return [KernelType(PROVIDER, "python3", f"Python 3 (nice -n {n})", "python", argv)]
