"""Public names that load on first use (PEP 562), for the package's two doors.

``kernel_hub`` and ``kernel_hub.provider`` each re-export names whose modules
cost memory or import time that most users never need; both load them the
same way, with the module ``__getattr__`` and ``__dir__`` made here. A module
that moved keeps its old name with :func:`alias_module` (through the provider door).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["alias_module", "lazy_names"]


def lazy_names(
    namespace: dict[str, Any], names: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a module's ``__getattr__`` and ``__dir__`` that import *names* on first use.

    :param namespace: the module's ``globals()``; a loaded name is stored there, so
        later lookups do not come back.
    :param names: public name → ``".module"`` (relative to the module's package),
        or ``".module:attribute"`` where the attribute is named otherwise.
    :param public: the module's ``__all__``, which ``dir()`` lists too.
    """
    module_name, package = namespace["__name__"], namespace["__package__"]
    public = tuple(public)

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        module, _, attribute = names[name].partition(":")
        value = getattr(importlib.import_module(module, package), attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *public})

    return __getattr__, __dir__


def alias_module(name: str, target: str, *, install: str) -> None:
    """Make *name*, the module being imported, another name of module *target*.

    Called by a module that moved, as its only code:
    ``alias_module(__name__, "kernel_hub_ssh_testing", install="kernel-hub-ssh[testing]")``.
    Importing the old name then gives the module *target* itself.

    :param install: the requirement that brings *target*.
    :raises ModuleNotFoundError: in one line that names *install*, when *target*
        or something it imports is missing.
    """
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        message = f"{exc}: {name} needs pip install '{install}'"
        raise ModuleNotFoundError(message, name=exc.name) from None
    sys.modules[name] = module
