"""The ipykernel of the running interpreter as one kernel type, ``ipykernel/python3``.

No kernelspec is needed: when ipykernel is importable in this environment,
the kernel runs as ``sys.executable -m ipykernel_launcher``. ipykernel is
looked up with :func:`importlib.util.find_spec`, never imported, because
importing it (and IPython) takes a noticeable fraction of a second.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import sys

from kernel_hub.provider import KernelType, UnavailableType

__all__ = [
    "PROVIDER",
    "find_ipykernel_types",
    "installed_ipykernel_version",
    "ipykernel_available",
    "ipykernel_has_curve",
]

#: The provider id of the kernel type this plugin offers.
PROVIDER = "ipykernel"

#: The first ipykernel that reads CurveZMQ keys from its connection file.
CURVE_SINCE = (7, 4)


def ipykernel_available() -> bool:
    """Return whether ipykernel can be imported by this interpreter (without importing it)."""
    try:
        return importlib.util.find_spec("ipykernel") is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def installed_ipykernel_version() -> tuple[int, int] | None:
    """Return the installed ipykernel's ``(major, minor)``, or ``None`` if unknown.

    Read from the name of its ``ipykernel-<version>.dist-info`` folder beside the
    package: neither ipykernel nor ``importlib.metadata`` is imported (the latter
    would cost every command that lists kernel types).
    """
    try:
        spec = importlib.util.find_spec("ipykernel")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    site = os.path.dirname(next(iter(spec.submodule_search_locations)))
    try:
        names = os.listdir(site)
    except OSError:
        return None
    for name in names:
        match = re.fullmatch(r"ipykernel-(\d+)\.(\d+)[^-]*\.dist-info", name)
        if match is not None:
            return int(match[1]), int(match[2])
    return None


def ipykernel_has_curve() -> bool:
    """Return whether the installed ipykernel speaks CurveZMQ (>= 7.4).

    What its kernelspec would say (``supported_encryption: ["curve"]``).
    """
    version = installed_ipykernel_version()
    return version is not None and version >= CURVE_SINCE


def find_ipykernel_types() -> list[KernelType | UnavailableType]:
    """Return ``[ipykernel/python3]`` when ipykernel is importable here.

    ipykernel is a dependency of this plugin, so it is missing only from a
    broken or ``--no-deps`` install. Then the type is an
    :class:`~kernel_hub.provider.UnavailableType` that says so and gives the
    pip command for this interpreter (nothing is logged: ``kernel-hub list``
    and a launch of the type show it).
    """
    if not ipykernel_available():
        return [
            UnavailableType(
                provider=PROVIDER,
                name="python3",
                reason=(
                    f"kernel-hub-ipykernel is installed, but ipykernel is not importable by "
                    f"{sys.executable}; install it: {sys.executable} -m pip install ipykernel"
                ),
            )
        ]
    version = platform.python_version()
    major_minor = ".".join(version.split(".")[:2])
    return [
        KernelType(
            provider=PROVIDER,
            name="python3",
            display_name=f"Python {major_minor} (this environment)",
            language="python",
            argv=(sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"),
            interrupt_mode="signal",
            metadata={
                "interpreter": sys.executable,
                "python_version": version,
                **({"supported_encryption": ["curve"]} if ipykernel_has_curve() else {}),
            },
        )
    ]
