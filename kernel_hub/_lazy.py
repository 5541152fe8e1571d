"""Public names that load on first use (PEP 562), for the package's two doors.

``kernel_hub`` and ``kernel_hub.provider`` each re-export names whose modules
cost memory or import time that most users never need; both load them the
same way, with the module ``__getattr__`` and ``__dir__`` made here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

__all__ = ["lazy_names"]


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
