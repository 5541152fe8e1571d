"""The nice provider's logic: this Python's ipykernel, started under ``nice -n N``."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from kernel_hub.provider import ConfigSchema, KernelType, between, setting

PROVIDER = "nice"


@dataclass(frozen=True)
class NiceSettings:  # the [nice] table of the config file
    niceness: int = setting(10, "the kernel's nice level, 0..19", check=between(0, 19))


SCHEMA = ConfigSchema(PROVIDER, settings=NiceSettings)


def find_nice_types(n: int) -> list[KernelType]:
    """Offer ``nice/python3``, under ``nice -n <n>``."""
    if importlib.util.find_spec("ipykernel") is None:
        return []  # nothing to offer is not an error
    python = (sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}")
    argv = ("nice", "-n", str(n), *python)
    return [KernelType(PROVIDER, "python3", f"Python 3 (nice -n {n})", "python", argv)]
