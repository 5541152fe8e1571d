"""The kernel_hub plugin contract.

Who calls these hooks: :class:`kernel_hub.KernelHub`, and nothing else. A host
application never calls them directly; it calls ``hub.find_kernel_types()``,
``hub.launch(type_id)`` and ``hub.attach(...)``, and the hub calls the hooks
through the typed façade in :mod:`kernel_hub.plugins`.

Every provider is a plugin, the built-in ones (``spec``, ``ipykernel``) too,
registered through the ``kernel_hub`` entry-point group. A plugin module holds
plain ``def`` functions decorated with :data:`kernel_hub.hookimpl`.

**Why plain ``def``, never ``async def``:** ``launch``, ``make_manager`` and
``restart_policy`` are *first result* hooks: pluggy calls implementations one
after another (LIFO by registration) and stops at the first that returns
something other than ``None``. An ``async def`` implementation returns a
coroutine object, which is never ``None``, so it would win even for a kernel
type it does not own. Decide synchronously: return ``None`` to decline, or
return the result (or an awaitable of it) to accept. The hub awaits hook
results in exactly one place (:func:`kernel_hub.plugins.await_me_maybe`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .hub import KernelHub
    from .manager import KernelManager
    from .types import KernelType, LaunchRequest, LaunchResult, RestartPolicy

PROJECT_NAME = "kernel_hub"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---- discovery ----


@hookspec
def find_kernel_types(
    hub: KernelHub,
) -> Iterable[KernelType] | Awaitable[Iterable[KernelType]] | None:
    """Return the kernel types this plugin offers.

    Called by :meth:`KernelHub.find_kernel_types` whenever a host lists kernel
    types, and by :meth:`KernelHub.launch` when it meets a type id it has not
    seen yet.

    :param hub: the calling hub; ``hub.config_for("<provider>")`` gives this
        plugin's table of the kernel_hub config file.
    :returns: an iterable of :class:`~kernel_hub.KernelType` (a generator is
        fine), an awaitable of one when discovery needs I/O, or ``None`` for
        nothing. Never raise for "nothing found": return an empty list.

    All results are collected; the implementations run concurrently, so slow
    discovery (a Docker engine, a remote host) does not hold up the others. A
    plugin that raises is logged with its name and skipped; the others still
    answer. Two plugins that offer the same id make the hub raise one
    :class:`~kernel_hub.PluginError` naming both distributions.

    **Example:**

    .. code-block:: python

        from kernel_hub import KernelType, hookimpl

        @hookimpl
        def find_kernel_types(hub):
            yield KernelType(provider="nice", name="python3", language="python",
                             argv=("nice", "python3", "-m", "ipykernel_launcher",
                                   "-f", "{connection_file}"))
    """


# ---- launch ----


@hookspec(firstresult=True)
def launch(
    hub: KernelHub, kernel_type: KernelType, request: LaunchRequest
) -> Awaitable[LaunchResult] | LaunchResult | None:
    """Start a kernel of *kernel_type* and describe it.

    Called by :meth:`KernelHub.launch` (and by the restarter, with the same
    request, when it relaunches a dead kernel) once the type id is resolved.

    :param hub: the calling hub.
    :param kernel_type: the type to start; check ``kernel_type.provider``.
    :param request: the launch request: ``kernel_id``, ``cwd``, ``env``, ``params``.
    :returns: ``None`` when this plugin does not own ``kernel_type.provider``;
        otherwise a :class:`~kernel_hub.LaunchResult` or an awaitable of one.
        Must be a plain ``def``: decide synchronously, then return a coroutine.
        On failure the awaitable raises :class:`~kernel_hub.LaunchError`, naming
        what failed and what to do, and leaves nothing running.

    Stops at first non-None result.

    **Example:**

    .. code-block:: python

        from kernel_hub import hookimpl
        from kernel_hub.subproc import launch_subprocess

        @hookimpl
        def launch(hub, kernel_type, request):
            if kernel_type.provider != "nice":
                return None
            return launch_subprocess(kernel_type, request)
    """


# ---- management ----


@hookspec(firstresult=True)
def make_manager(
    hub: KernelHub,
    kernel_type: KernelType,
    connection_info: Mapping[str, Any],
    state: Mapping[str, Any],
) -> KernelManager | Awaitable[KernelManager] | None:
    """Build the :class:`~kernel_hub.KernelManager` for a launched kernel.

    Called by :meth:`KernelHub.launch` right after ``launch`` returned, and by
    :meth:`KernelHub.attach` when a host re-attaches to a kernel from saved
    state, possibly in another process than the one that launched it.

    :param hub: the calling hub.
    :param kernel_type: the kernel's type; check ``kernel_type.provider``.
    :param connection_info: the kernel's connection info.
    :param state: the ``state`` the launch returned (or a manager's
        ``describe()`` output), JSON-decoded.
    :returns: ``None`` when this plugin does not own the type; otherwise a
        manager or an awaitable of one. Must be a plain ``def``.

    Stops at first non-None result. The core's trylast fallback builds a
    :class:`~kernel_hub.remote.NannyManager` when the connection info carries
    nanny ports, so providers that use the nanny need not implement this hook.

    **Example:**

    .. code-block:: python

        from kernel_hub import SubprocessManager, hookimpl

        @hookimpl
        def make_manager(hub, kernel_type, connection_info, state):
            if kernel_type.provider != "nice":
                return None
            return SubprocessManager.from_state(state)
    """


# ---- restart ----


@hookspec(firstresult=True)
def restart_policy(hub: KernelHub, kernel_type: KernelType) -> RestartPolicy | None:
    """Return how kernels of *kernel_type* are restarted when they die unexpectedly.

    Called by :meth:`KernelHub.launch` once per launch, unless the caller
    passed a policy or ``restart=False`` (call arguments win). The policy holds
    for the kernel's whole life; :class:`~kernel_hub.restarter.KernelRestarter`
    applies it.

    :param hub: the calling hub.
    :param kernel_type: the type being launched.
    :returns: ``None`` to leave the decision to other plugins, else a
        :class:`~kernel_hub.RestartPolicy` (``RestartPolicy(enabled=False)``
        turns restarts off). Must be a plain ``def``.

    Stops at first non-None result. The core registers a ``trylast`` default
    (:data:`kernel_hub.defaults.DEFAULT_RESTART_POLICY`), so any plugin overrides it.

    **Example:**

    .. code-block:: python

        from kernel_hub import RestartPolicy, hookimpl

        @hookimpl
        def restart_policy(hub, kernel_type):
            if kernel_type.provider == "nice":
                return RestartPolicy(limit=2, window=30)
            return None
    """
