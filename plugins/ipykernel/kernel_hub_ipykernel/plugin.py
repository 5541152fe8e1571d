"""Hook implementations of the ipykernel provider: this environment's ipykernel.

Its types are plain command lines, so ``launch`` and ``make_manager`` are the core's
ready-made local hooks; the hub routes them here only for the types this plugin offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernel_hub.provider import hookimpl
from kernel_hub.provider import local_launch as launch
from kernel_hub.provider import local_make_manager as make_manager

from .launcher import PROVIDER, find_ipykernel_types

if TYPE_CHECKING:
    from kernel_hub.provider import HubContext, KernelType, UnavailableType

__all__ = ["PROVIDER", "find_kernel_types", "launch", "make_manager"]


@hookimpl
def find_kernel_types(hub: HubContext) -> list[KernelType | UnavailableType]:
    return find_ipykernel_types()
