"""The core's ``[culling]`` table: idle culling for every kernel of a hub, or per type.

.. code-block:: toml

    [culling]                  # every kernel of a hub that reads this file
    idle = 3600                # culled after an hour of doing nothing
    [culling."ssh/gpu-box"]    # one kernel type: these fields override [culling]'s
    idle = 600
    busy = 7200                # also cull it after two hours busy without CPU use

No table, or no ``idle`` in force for a type: its kernels are never culled.
``idle = 0`` in a type's table turns culling off for that type. A host's
``KernelHub(cull=...)`` comes first (see :func:`resolve`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ..contract.types import CullPolicy
from .schema import ConfigSchema, positive, setting

if TYPE_CHECKING:
    from ..contract.hookspecs import HubContext

__all__ = ["SCHEMA", "TABLE", "CullTable", "config_policies", "policy_from"]

#: The top-level table of the config file that the core itself reads.
TABLE = "culling"


def _not_negative(value: float) -> float:
    if value < 0:
        raise ValueError(f"must be 0 or more, not {value!r}")
    return value


@dataclass(frozen=True)
class CullTable:
    """``[culling]`` and each ``[culling."<type id>"]``: unset fields inherit."""

    idle: float | None = setting(
        None, "seconds of inactivity before a kernel is culled (0: never)", check=_not_negative
    )
    busy: float | None = setting(
        None, "seconds busy without CPU use before a kernel is culled too", check=positive
    )
    cpu: float | None = setting(
        None, "CPU-seconds per second that count as work (default 0.05)", check=_not_negative
    )
    connected: bool | None = setting(None, "an open client of the hub counts as activity")
    interval: float | None = setting(
        None,
        "seconds between checks (default: a quarter of the shortest threshold, 1-60)",
        check=positive,
    )


SCHEMA = ConfigSchema(TABLE, settings=CullTable, types=CullTable, type_ids=True)


def policy_from(*tables: CullTable | None) -> CullPolicy | None:
    """Merge tables (later ones override set fields) into a policy; ``None``: no culling."""
    merged: dict[str, Any] = {}
    for table in tables:
        if table is not None:
            values = {f.name: getattr(table, f.name) for f in fields(table)}
            merged.update({k: v for k, v in values.items() if v is not None})
    if not merged.get("idle"):
        return None
    return CullPolicy(**merged)


def config_policies(hub: HubContext) -> tuple[CullPolicy | None, dict[str, CullPolicy | None]]:
    """Return *hub*'s config's hub-wide policy and per-type ones (problems logged once)."""
    parsed = SCHEMA.load(hub)
    return policy_from(parsed.settings), {
        type_id: policy_from(parsed.settings, table) for type_id, table in parsed.types.items()
    }
