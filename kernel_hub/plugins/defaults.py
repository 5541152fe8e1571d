"""The core's own fallbacks, registered ``trylast`` so that any plugin overrides them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..contract.hookspecs import hookimpl
from ..contract.types import RestartPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..contract.hookspecs import HubContext
    from ..contract.types import KernelType
    from ..managers.remote import NannyManager

__all__ = ["DEFAULT_PLUGINS", "DEFAULT_RESTART_POLICY"]

#: The restart policy of any kernel type whose plugin does not choose one.
DEFAULT_RESTART_POLICY = RestartPolicy()


class CoreDefaults:
    """Fallback hook implementations of the core."""

    @staticmethod
    @hookimpl(trylast=True)
    def restart_policy(hub: HubContext, kernel_type: KernelType) -> RestartPolicy:
        return DEFAULT_RESTART_POLICY

    @staticmethod
    @hookimpl(trylast=True)
    def make_manager(
        kernel_type: KernelType, connection_info: Mapping[str, Any], state: Mapping[str, Any]
    ) -> NannyManager | None:
        # Any kernel served by a nanny is managed through it, whoever launched it; a provider
        # that tunnels (SSH) implements make_manager itself to re-open its tunnels first.
        # (pluggy passes only the hook's arguments named here: the hub is not needed.)
        from ..managers.remote import NannyManager, is_nanny_info

        if not is_nanny_info(connection_info):
            return None
        return NannyManager.from_state(connection_info, state, type_id=kernel_type.id)


#: ``(name, plugin)`` pairs that :func:`make_plugin_manager` registers last.
DEFAULT_PLUGINS: tuple[tuple[str, object], ...] = (("kernel_hub.defaults", CoreDefaults),)
