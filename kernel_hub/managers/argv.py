"""Kernel command lines: fill ``{connection_file}``-style templates and expand ``$VAR`` in env.

Used by every provider that starts a command (local subprocesses, the nanny
launch mode, containers), so that one type's argv means the same everywhere.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["expand_env", "format_argv"]


def expand_env(env: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """Return *env* with ``${VAR}``/``$VAR`` replaced from *base* (unknown names stay)."""
    return {k: string.Template(str(v)).safe_substitute(base) for k, v in env.items()}


def format_argv(argv: Sequence[str], **values: str) -> list[str]:
    """Fill the ``{connection_file}``-style templates of a kernel argv.

    Only the named templates are replaced; other braces (a ``-c`` snippet's
    dict literal) stay as they are.
    """
    out = []
    for arg in argv:
        for name, value in values.items():
            arg = arg.replace("{" + name + "}", value)
        out.append(arg)
    return out
