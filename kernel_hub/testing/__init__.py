"""Test kit for kernel_hub and its plugins: an opt-in pytest plugin.

Its parts: :mod:`.fakes` (a scripted kernel and transport, for unit tests of
client logic), :mod:`.events` (awaiting a hub's lifecycle events) and
:mod:`.processes` (processes, nannies, leftovers); all are importable from here.

Enable it in a ``conftest.py`` with ``pytest_plugins = ["kernel_hub.testing"]``.

Fixtures:

- ``plugin_manager``: a fresh plugin manager without entry points.
- ``scripted_transport``: a :class:`ScriptedTransport` factory; it replays a
  scripted kernel's replies to an :class:`~kernel_hub.AsyncKernelClient`, so
  client logic is tested without a kernel process.
- ``fake_kernel``: a :class:`FakeKernel` answering like ipykernel would.

Helpers: :class:`EventRecorder` records a hub's lifecycle events and awaits
them; :func:`require_service` skips a test whose service (dockerd, sshd) is
missing on a developer's machine but fails it in CI (``CI=true``);
:func:`processes_with_env` and :func:`processes_running` find the processes a
run left behind (by environment, by command line), :func:`wait_gone` waits for
processes to end, :func:`pid_alive` says whether one runs and :func:`free_ports`
picks ports for a test's own servers (the same choice kernels get);
:func:`hmac_sha256` signs frames as the wire protocol does, independently of the
code under test; :func:`spawn_grandchild` has a kernel start a process of its own;
:class:`ProviderConformance` is the conformance suite for provider plugins (see
:mod:`kernel_hub.conformance` and ``docs/writing-a-plugin.md``), with
:func:`execute_output` and :func:`interrupt_busy_loop`, its execute and interrupt
checks, for a provider's own tests too; and
:func:`start_nanny`, which runs ``python - < nanny.py`` as a remote provider
would and returns a :class:`NannyProcess` whose ``stop()`` leaves nothing behind;
:class:`ForeignClient`, a jupyter_client client made from a kernel's connection
info, to check that a restart keeps it working; :func:`fake_kernel_plugin`, a
provider of ``fake/echo``: a real process that speaks the protocol but runs no
code (:mod:`.protokernel`, a few MB each), for tests and benchmarks of many kernels;
:class:`Sniffer`, keyless sockets on a kernel's ports, to check that a CurveZMQ
kernel gives nothing readable to whoever connects without its keys.

Enabling the plugin also registers the markers the suite uses
(``integration``, ``slow``, ``docker``, ``ssh``), so ``--strict-markers`` works.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from ..conformance import ProviderConformance, execute_output, interrupt_busy_loop
from ..managers.procs import pid_alive
from ..plugins import KernelHubPluginManager, make_plugin_manager
from ..wire.connection import free_ports
from .console import PipedConsole, run_cli
from .events import EventRecorder
from .fakes import FakeKernel, Responder, ScriptedTransport, hmac_sha256
from .foreign import ForeignClient
from .processes import (
    NannyProcess,
    children,
    descendants,
    processes_running,
    processes_with_env,
    spawn_grandchild,
    start_nanny,
    wait_gone,
    wait_pid_gone,
)
from .protoplugin import FAKE_TYPE, fake_kernel_plugin
from .sniffer import Sniffer

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "EventRecorder",
    "FAKE_TYPE",
    "FakeKernel",
    "ForeignClient",
    "ProviderConformance",
    "NannyProcess",
    "PipedConsole",
    "Responder",
    "Sniffer",
    "ScriptedTransport",
    "children",
    "descendants",
    "execute_output",
    "fake_kernel",
    "fake_kernel_plugin",
    "free_ports",
    "hmac_sha256",
    "interrupt_busy_loop",
    "pid_alive",
    "plugin_manager",
    "processes_running",
    "processes_with_env",
    "require_service",
    "run_cli",
    "scripted_transport",
    "spawn_grandchild",
    "start_nanny",
    "wait_gone",
    "wait_pid_gone",
]

#: The markers kernel_hub's tests and the conformance suite use.
MARKERS = {
    "integration": "starts a real ipykernel process",
    "slow": "takes more than a few seconds",
    "docker": "needs a real Docker engine",
    "ssh": "needs a real sshd on loopback",
}


def pytest_configure(config: pytest.Config) -> None:
    """Register :data:`MARKERS`, so that projects using the kit need not."""
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


def require_service(name: str, available: bool, how: str) -> None:
    """Skip when service *name* is unavailable on a developer's machine; fail in CI.

    :param how: how to start the service, shown in the message.
    """
    if available:
        return
    msg = f"{name} is not available: {how}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{msg} (CI=true: tests of real services must run in CI)", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def plugin_manager() -> KernelHubPluginManager:
    """A fresh plugin manager with the core defaults and no entry-point plugins."""
    return make_plugin_manager(load_entrypoints=False)


@pytest.fixture
def fake_kernel() -> FakeKernel:
    """A scripted kernel; ``fake_kernel.client()`` returns a client wired to it."""
    return FakeKernel()


@pytest.fixture
def scripted_transport() -> Callable[..., ScriptedTransport]:
    """A factory of :class:`ScriptedTransport` objects."""
    return ScriptedTransport


# ---- nanny ----
