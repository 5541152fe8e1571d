"""The core's ``[pool]`` table: warm kernel pools a long-lived host starts from the config file.

.. code-block:: toml

    [pool."ipykernel/python3"]   # one table per kernel type id
    size = 2                     # keep two kernels started and ready
    adapt = true                 # serve launches with another cwd/env too (the default)

A host that lives long (the Jupyter bridge; a pool daemon) calls
``await hub.start_configured_pools()``; a plain ``KernelHub()`` starts none
(a one-shot ``kernel-hub run`` must not start spare kernels). Each table's
fields are :meth:`KernelHub.pool`'s arguments; ``size = 0`` keeps no pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..contract.types import checked_env
from .schema import ConfigSchema, positive, setting

if TYPE_CHECKING:
    from ..contract.hookspecs import HubContext

__all__ = ["SCHEMA", "TABLE", "PoolTable", "configured_pools"]

#: The top-level table of the config file that the core itself reads.
TABLE = "pool"


def _size(value: int) -> int:
    if value < 0:
        raise ValueError(f"must be 0 or more, not {value!r}")
    return value


def _env(value: dict[str, str]) -> dict[str, str]:
    try:
        return checked_env(value, "env")
    except ValueError as exc:
        raise ValueError(f"is not a usable environment: {exc}") from None


@dataclass(frozen=True)
class PoolTable:
    """``[pool."<type id>"]``: one pool of ready kernels of that type.

    Its fields are :meth:`KernelHub.pool`'s keywords (the hub passes them as they are).
    """

    size: int = setting(doc="how many kernels to keep started and ready", check=_size)
    adapt: bool = setting(
        True,
        "a Python kernel of this machine also serves launches with another cwd or env "
        "(set in it before hand-out); false: only launches with the pool's own",
    )
    cwd: str | None = setting(None, "the spares' working directory (default: the host's)")
    env: dict[str, str] = setting({}, "environment variables of the spares", check=_env)
    params: dict[str, Any] = setting({}, "provider parameters of the spares")
    nanny: bool = setting(False, "run the spares under a local nanny")
    ready_timeout: float = setting(
        60.0, "seconds a spare may take to answer before its start counts as failed", check=positive
    )


SCHEMA = ConfigSchema(TABLE, types=PoolTable, type_ids=True)


def configured_pools(hub: HubContext) -> dict[str, PoolTable]:
    """Return type id -> its pool table, from *hub*'s config (problems logged once)."""
    return dict(SCHEMA.load(hub).types)
