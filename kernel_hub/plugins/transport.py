"""The core's ``[transport]`` table: CurveZMQ encryption for every kernel, or per type.

.. code-block:: toml

    [transport]
    encryption = "required"        # every kernel of every hub that reads this file
    [transport."docker/legacy"]    # one kernel type: overrides [transport]
    encryption = "disabled"

Which policy a launch gets, first match wins: the launch's own
``transport_encryption=``, ``[transport."<type id>"]``, the host's
``KernelHub(transport_encryption=...)``, ``[transport]``, then ``"auto"``
(see :meth:`kernel_hub.KernelHub.encryption_for`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..contract.types import check_encryption
from .schema import ConfigSchema, setting

if TYPE_CHECKING:
    from ..contract.hookspecs import HubContext
    from ..contract.types import TransportEncryption

__all__ = ["SCHEMA", "TABLE", "TransportTable", "config_encryption"]

#: The top-level table of the config file that the core itself reads.
TABLE = "transport"


@dataclass(frozen=True)
class TransportTable:
    """``[transport]`` and each ``[transport."<type id>"]``."""

    encryption: str | None = setting(
        None,
        "CurveZMQ: 'auto' (types that declare it), 'required' or 'disabled'",
        check=check_encryption,
    )


SCHEMA = ConfigSchema(TABLE, settings=TransportTable, types=TransportTable, type_ids=True)


def config_encryption(
    hub: HubContext,
) -> tuple[TransportEncryption | None, dict[str, TransportEncryption]]:
    """Return *hub*'s config's hub-wide policy and per-type ones (problems logged once)."""
    parsed = SCHEMA.load(hub)
    everywhere = parsed.settings.encryption if parsed.settings is not None else None
    per_type = {
        type_id: check_encryption(table.encryption)
        for type_id, table in parsed.types.items()
        if table.encryption is not None
    }
    return (check_encryption(everywhere) if everywhere is not None else None), per_type
