"""The core's own fallbacks, registered ``trylast`` so that any plugin overrides them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .hookspecs import hookimpl
from .types import RestartPolicy

if TYPE_CHECKING:
    from .hub import KernelHub
    from .types import KernelType

__all__ = ["DEFAULT_PLUGINS", "DEFAULT_RESTART_POLICY"]

#: The restart policy of any kernel type whose plugin does not choose one.
DEFAULT_RESTART_POLICY = RestartPolicy()


class CoreDefaults:
    """Fallback hook implementations of the core."""

    @staticmethod
    @hookimpl(trylast=True)
    def restart_policy(hub: KernelHub, kernel_type: KernelType) -> RestartPolicy:
        return DEFAULT_RESTART_POLICY


#: ``(name, plugin)`` pairs that :func:`make_plugin_manager` registers last.
DEFAULT_PLUGINS: tuple[tuple[str, object], ...] = (("kernel_hub.defaults", CoreDefaults),)
