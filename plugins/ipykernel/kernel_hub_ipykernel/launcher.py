"""The ipykernel of the running interpreter as one kernel type, ``ipykernel/python3``.

No kernelspec is needed: when ipykernel is importable in this environment,
the kernel runs as ``sys.executable -m ipykernel_launcher``. ipykernel is
looked up with :func:`importlib.util.find_spec`, never imported, because
importing it (and IPython) takes a noticeable fraction of a second.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import re
import sys

from kernel_hub.provider import KernelType, UnavailableType

__all__ = ["PROVIDER", "find_ipykernel_types", "ipykernel_available", "ipykernel_has_curve"]

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


def ipykernel_has_curve() -> bool:
    """Return whether the installed ipykernel speaks CurveZMQ (>= 7.4), from its metadata.

    What its kernelspec would say (``supported_encryption: ["curve"]``), read from
    the distribution's version without importing it.
    """
    try:
        version = importlib.metadata.version("ipykernel")
    except importlib.metadata.PackageNotFoundError:
        return False
    match = re.match(r"(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= CURVE_SINCE


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
