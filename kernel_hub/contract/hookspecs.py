"""The kernel_hub plugin contract.

Who calls these hooks: :class:`kernel_hub.KernelHub`, and nothing else. A host
application never calls them directly; it calls ``hub.find_kernel_types()``,
``hub.launch(type_id)`` and ``hub.attach(...)``, and the hub calls the hooks
through the typed façade in :mod:`kernel_hub.plugins`.

Every provider is a plugin, the built-in ones (``spec``, ``ipykernel``) too,
registered through the ``kernel_hub`` entry-point group. A plugin module holds
plain ``def`` functions decorated with :data:`kernel_hub.hookimpl`.

**Routed by ownership.** ``find_kernel_types`` is asked of every plugin. The hub
remembers which plugin offered each type and calls ``launch``, ``make_manager``
and ``restart_policy`` on that plugin only (pluggy's subset hook caller, with the
core's ``trylast`` fallbacks), so an implementation never sees another
provider's types and needs no "is this mine?" check. Return the result or an
awaitable of it; the hub awaits hook results in exactly one place
(:func:`kernel_hub.plugins.await_me_maybe`). Plugins import the core through
:mod:`kernel_hub.provider` only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import os
    from collections.abc import Awaitable, Iterable, Mapping

    from .manager import KernelManager
    from .types import KernelType, LaunchRequest, LaunchResult, RestartPolicy, UnavailableType

PROJECT_NAME = "kernel_hub"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class HubContext(Protocol):
    """What a plugin may use of the hub that calls its hooks: the ``hub`` argument.

    :class:`kernel_hub.KernelHub` is one. A plugin needs nothing else of it,
    and the contract names this narrow view instead of the hub class.
    """

    @property
    def config(self) -> Mapping[str, Any]:
        """The whole parsed kernel_hub config file."""
        ...

    def config_for(self, plugin: str) -> dict[str, Any]:
        """Return the ``[<plugin>]`` table of the config file (empty if absent)."""
        ...

    @property
    def config_file(self) -> os.PathLike[str] | None:
        """The config file the config was read from (for messages), or ``None``: given as data."""
        ...

    def emit(self, kind: str, kernel_id: str, type_id: str, **data: Any) -> None:
        """Emit a lifecycle event (``progress``, ``connection_lost``, ...).

        Safe to call from any thread: the event is delivered on the hub's loop.
        """
        ...


# ---- discovery ----


@hookspec
def find_kernel_types(
    hub: HubContext,
) -> (
    Iterable[KernelType | UnavailableType]
    | Awaitable[Iterable[KernelType | UnavailableType]]
    | None
):
    """Return the kernel types this plugin offers.

    Called by :meth:`KernelHub.find_kernel_types` whenever a host lists kernel
    types, and by :meth:`KernelHub.launch` when it meets a type id it has not
    seen yet.

    :param hub: the calling hub; ``hub.config_for("<provider>")`` gives this
        plugin's table of the kernel_hub config file.
    :returns: an iterable of :class:`~kernel_hub.KernelType` (a generator is
        fine), an awaitable of one when discovery needs I/O, or ``None`` for
        nothing. Never raise for "nothing found": return an empty list. For a
        type the plugin would offer but cannot here (a package it needs is
        missing), return an :class:`~kernel_hub.UnavailableType` with the
        reason and the fix instead: the host that asks for that type then gets
        that reason, not a list of other types.

    All results are collected; the implementations run concurrently, so slow
    discovery (a Docker engine, a remote host) does not hold up the others. A
    plugin that raises is logged with its name and skipped; the others still
    answer. Two plugins that offer the same id make the hub raise one
    :class:`~kernel_hub.PluginError` naming both distributions.

    **Example:**

    .. code-block:: python

        from kernel_hub.provider import KernelType, hookimpl

        @hookimpl
        def find_kernel_types(hub):
            yield KernelType(provider="nice", name="python3", language="python",
                             argv=("nice", "python3", "-m", "ipykernel_launcher",
                                   "-f", "{connection_file}"))
    """


# ---- launch ----


@hookspec(firstresult=True)
def launch(
    hub: HubContext, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult] | LaunchResult | None:
    """Start a kernel of *kernel_type* and describe it.

    Called by :meth:`KernelHub.launch` on the plugin that offered *kernel_type*
    (and again, with the same request plus ``request.connection``, when the
    kernel is relaunched after a death or by ``kernel.restart()``); not for
    ``launch(..., nanny=True)``, which the core runs itself.

    On a relaunch ``request.connection`` is the old process's connection info.
    A provider that chooses the endpoint its clients connect to reuses it (the
    same ``transport``, ``ip``, five ports, ``key`` and ``signature_scheme``), so
    that clients holding it do not notice the restart; if a port is taken, it
    takes new ones and keeps the key (``new_connection_info(reuse=...)`` does
    both). After a start that failed with "Address already in use" the core calls
    again with ``request.connection`` stripped of its ports. A provider whose
    endpoint moves by nature may ignore it: the core emits ``connection_changed``
    whenever the new connection info differs from the old.

    :param hub: the calling hub.
    :param kernel_type: the type to start (always one this plugin offered).
    :param request: the launch request: ``kernel_id``, ``cwd``, ``env``, ``params``,
        and ``connection`` (``None`` on a first launch).
    :returns: a :class:`~kernel_hub.LaunchResult` or an awaitable of one. Put the
        live manager of what was started on ``LaunchResult.manager``; the hub then
        uses it as it is (``make_manager`` only rebuilds from state on attach).
        On failure raise :class:`~kernel_hub.LaunchError`, naming what failed and
        what to do, and leave nothing running.

    Stops at first non-None result.

    **Example:**

    .. code-block:: python

        from kernel_hub.provider import hookimpl, launch_subprocess

        @hookimpl
        def launch(hub, kernel_type, request):
            return launch_subprocess(kernel_type, request)
    """


# ---- management ----


@hookspec(firstresult=True)
def make_manager(
    hub: HubContext,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> KernelManager | Awaitable[KernelManager] | None:
    """Build the :class:`~kernel_hub.KernelManager` for a launched kernel.

    Called by :meth:`KernelHub.attach` (through :meth:`KernelHub.manager_for`), on
    the plugin that owns the type, when a host re-attaches to a kernel from saved
    state, possibly in another process than the one that launched it; and by
    :meth:`KernelHub.launch` when a ``LaunchResult`` carries no live manager.

    :param hub: the calling hub.
    :param kernel_type: the kernel's type (one this plugin offered).
    :param connection_info: the kernel's connection info.
    :param state: the ``state`` the launch returned (or a manager's
        ``describe()`` output), JSON-decoded.
    :returns: a manager or an awaitable of one.

    Stops at first non-None result. The core's trylast fallback builds a
    :class:`~kernel_hub.managers.remote.NannyManager` when the connection info carries
    nanny ports, so providers that use the nanny need not implement this hook.

    **Example:**

    .. code-block:: python

        from kernel_hub.provider import SubprocessManager, hookimpl

        @hookimpl
        def make_manager(hub, kernel_type, connection_info, state):
            return SubprocessManager.from_state(state, type_id=kernel_type.id)
    """


# ---- restart ----


@hookspec(firstresult=True)
def restart_policy(hub: HubContext, kernel_type: KernelType) -> RestartPolicy | None:
    """Return how kernels of *kernel_type* are restarted when they die unexpectedly.

    Called by :meth:`KernelHub.launch`, on the plugin that offered the type, once
    per launch, unless the caller passed a policy or ``restart=False`` (call
    arguments win). The policy holds
    for the kernel's whole life; :class:`~kernel_hub.lifecycle.restarter.KernelRestarter`
    applies it.

    :param hub: the calling hub.
    :param kernel_type: the type being launched.
    :returns: ``None`` for the core's default, else a
        :class:`~kernel_hub.RestartPolicy` (``RestartPolicy(enabled=False)``
        turns restarts off).

    Stops at first non-None result. The core registers a ``trylast`` default
    (:data:`kernel_hub.plugins.defaults.DEFAULT_RESTART_POLICY`), so any plugin overrides it.

    **Example:**

    .. code-block:: python

        from kernel_hub.provider import RestartPolicy, hookimpl

        @hookimpl
        def restart_policy(hub, kernel_type):
            return RestartPolicy(limit=2, window=30)
    """
