"""The hook contract at its public path: the names of :mod:`kernel_hub.contract.hookspecs`.

Plugin authors and docs name ``kernel_hub.hookspecs``; the specs themselves live with
the rest of the contract (value types, the manager ABC, errors, events) in
:mod:`kernel_hub.contract`.
"""

from __future__ import annotations

from .contract.hookspecs import (
    PROJECT_NAME,
    HubContext,
    find_kernel_types,
    hookimpl,
    hookspec,
    launch,
    make_manager,
    restart_policy,
)

__all__ = [
    "PROJECT_NAME",
    "HubContext",
    "find_kernel_types",
    "hookimpl",
    "hookspec",
    "launch",
    "make_manager",
    "restart_policy",
]
