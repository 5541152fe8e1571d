"""The provider conformance suite: a battery of tests every kernel_hub provider should pass.

A plugin author subclasses :class:`ProviderConformance` in a test module, names
the plugins and the kernel types to exercise, and pytest collects the battery
in the subclass (the llm/pytest "test class to inherit" pattern):

.. code-block:: python

    # tests/test_conformance_nice.py
    import kernel_hub_nice.plugin
    from kernel_hub.testing import ProviderConformance

    class TestNiceConformance(ProviderConformance):
        plugins = [kernel_hub_nice.plugin]   # plugin objects, or entry-point names ("nice")
        type_ids = ["nice/python3"]          # the kernel types to launch

Every test that needs a kernel type is parametrised over :attr:`type_ids`.
Override the ``conformance_setup`` fixture to prepare what the provider needs
(a kernelspec in a temp dir, a service, a config table) and
:meth:`ProviderConformance.assert_nothing_left` to check provider-specific
leftovers (containers, tunnels, remote files) after a shutdown.

The battery:

- ``test_kernel_types_are_valid``: the plugins' kernel types have valid,
  namespaced ids under the providers of :attr:`type_ids`, and JSON-able ``to_dict()``;
- ``test_launch_execute_output``: launch → ready → execute → its output arrives;
- ``test_interrupt_busy_loop``: a busy loop, interrupted after it printed "go",
  ends with a ``KeyboardInterrupt`` reply, and the kernel still answers;
- ``test_kill``: after ``manager.kill()``, ``wait()`` returns and ``is_alive()`` is false;
- ``test_shutdown_leaves_nothing``: after ``shutdown()`` nothing runs and
  nothing is left (connection file, process group, :meth:`assert_nothing_left`);
- ``test_describe_and_reattach``: ``describe()`` is JSON and ``make_manager``
  (through ``hub.attach``) rebuilds a working manager from it;
- ``test_plugins_launch_what_they_offer``: a plugin that offers kernel types
  implements ``launch`` (the hub routes it there, and nowhere else);
- ``test_unknown_name_raises``: launching ``<provider>/<unknown>`` raises
  :class:`~kernel_hub.NoSuchKernelType`.

Kernels are launched with automatic restarts off (``launch(restart=False)``),
because the battery kills them on purpose.
Kernel-launching tests carry the ``integration`` marker. Add ``pytestmark =
[pytest.mark.docker]`` (or ``ssh``) to the subclass for tests of a service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import pytest_asyncio

from .contract.errors import NoSuchKernelType
from .contract.types import KernelType, UnavailableType, split_type_id
from .hub import KernelHub
from .managers.procs import process_group
from .plugins import ENTRYPOINT_GROUP, make_plugin_manager
from .plugins.entrypoints import entry_points
from .wire.connection import runtime_dir

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from .client import AsyncKernelClient
    from .contract.manager import KernelManager
    from .hub import RunningKernel
    from .lifecycle.kernel_client import KernelClient
    from .plugins import KernelHubPluginManager
    from .wire.session import Message

__all__ = ["ProviderConformance", "execute_output", "interrupt_busy_loop", "load_plugins"]


async def execute_output(
    client: AsyncKernelClient | KernelClient, code: str, *, timeout: float
) -> tuple[dict[str, Any], str]:
    """Execute *code*; return the reply's content and the text it printed (stream output).

    :param timeout: seconds for the execute request.
    """
    outputs: list[Message] = []
    reply = await client.execute(code, output_hook=outputs.append, timeout=timeout)
    text = "".join(m.content.get("text", "") for m in outputs if m.header["msg_type"] == "stream")
    return reply.content, text


async def interrupt_busy_loop(
    client: AsyncKernelClient | KernelClient, code: str, *, timeout: float, interrupt_timeout: float
) -> Message:
    """Run *code*, interrupt it once it has printed ``go``, and return its execute reply.

    "go" on stdout means the loop runs: no sleep guessing when it started.

    :param code: a busy loop that prints ``go`` (flushed) before it starts.
    :param timeout: seconds for "go" to arrive, and the execute request's own timeout.
    :param interrupt_timeout: seconds from the interrupt to the execute reply.
    """
    go = asyncio.Event()

    def on_output(msg: Message) -> None:
        if msg.header["msg_type"] == "stream" and "go" in msg.content.get("text", ""):
            go.set()

    task = asyncio.ensure_future(client.execute(code, output_hook=on_output, timeout=timeout))
    try:
        await asyncio.wait_for(go.wait(), timeout)
        await client.interrupt()
        return await asyncio.wait_for(task, interrupt_timeout)
    finally:
        task.cancel()  # a no-op once done; else don't leave it pending
        await asyncio.gather(task, return_exceptions=True)


def load_plugins(plugins: Sequence[object | str]) -> KernelHubPluginManager:
    """Build a plugin manager holding only *plugins* and the core defaults.

    :param plugins: plugin objects (modules, classes), or names of entry points
        of the ``kernel_hub`` group, which are loaded as an installed host would.
    :raises pytest.fail: when a named entry point is missing or fails to load.
    """
    names = {p for p in plugins if isinstance(p, str)}
    objects = [p for p in plugins if not isinstance(p, str)]
    eps = [ep for ep in entry_points(ENTRYPOINT_GROUP) if ep.name in names]
    pm = make_plugin_manager(load_entrypoints=bool(names), entry_points=eps, plugins=objects)
    for name in sorted(names):
        if name in pm.failed:
            pytest.fail(f"plugin {name!r} failed to load: {pm.failed[name].error}", pytrace=False)
        if pm.get_plugin(name) is None:
            pytest.fail(
                f"no entry point {name!r} in group {ENTRYPOINT_GROUP!r}: install the plugin's "
                "distribution (pip install -e .) so that its entry point is registered",
                pytrace=False,
            )
    return pm


def _live_pids(*, pid: int | None, pgid: int | None) -> list[int]:
    """Return the processes, zombies excepted, that are *pid* or in process group *pgid*."""
    if not os.path.isdir("/proc"):  # no /proc to tell zombies apart: probe with signal 0
        live = []
        for probe, target in ((os.kill, pid), (os.killpg, pgid)):
            if target:
                with contextlib.suppress(ProcessLookupError):
                    probe(target, 0)
                    live.append(target)
        return live
    live = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        group = process_group(int(entry))  # None: a zombie, or ended while we looked
        if group is not None and (int(entry) == pid or (pgid and group == pgid)):
            live.append(int(entry))
    return live


class ProviderConformance:
    """Inherit from this in a ``Test*`` class to run the conformance battery on a provider.

    Class attributes to set:

    - ``plugins``: the plugins under test: plugin objects or entry-point names.
    - ``type_ids``: the kernel type ids to exercise (each test runs once per id).
    - ``config``: the hub's config (one table per plugin), unless
      ``conformance_setup`` returns one.
    - ``local_kernels``: ``False`` when the pids and paths of the launch state
      belong to another machine, so they cannot be checked here.
    - ``print_code`` and ``busy_code``: snippets for kernels that do not speak
      Python: print ``{text}`` (replaced by a ``repr`` string literal) and a
      newline; print ``go`` (flushed), then loop forever.
    - ``launch_timeout``, ``timeout``, ``interrupt_timeout``: seconds.
    """

    plugins: ClassVar[Sequence[object | str]] = ()
    type_ids: ClassVar[Sequence[str]] = ()
    config: ClassVar[Mapping[str, Any]] = {}
    local_kernels: ClassVar[bool] = True

    print_code: ClassVar[str] = "print({text})"
    busy_code: ClassVar[str] = 'print("go", flush=True)\nwhile True:\n    pass'

    #: Seconds a kernel may take to become ready (2-core CI machines are slow).
    launch_timeout: ClassVar[float] = 60.0
    #: Seconds an execution, a kill or a shutdown may take.
    timeout: ClassVar[float] = 60.0
    #: Seconds from interrupting a busy loop to its ``KeyboardInterrupt`` reply.
    interrupt_timeout: ClassVar[float] = 30.0

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrise every test taking ``type_id`` over :attr:`type_ids`."""
        if "type_id" in metafunc.fixturenames:
            if not self.type_ids:
                raise TypeError(f"{type(self).__name__}.type_ids is empty: name a type to test")
            metafunc.parametrize("type_id", list(self.type_ids))

    # ---- fixtures and hooks for authors ----

    @pytest.fixture
    def conformance_setup(self) -> Mapping[str, Any] | None:
        """Prepare what the provider needs; return the hub config, or ``None`` for :attr:`config`.

        Override it as a fixture in the subclass; it may take other fixtures
        (``tmp_path``, ``monkeypatch``) and may call :func:`require_service`.
        """
        return None

    @pytest.fixture
    def conformance_plugin_manager(self) -> KernelHubPluginManager:
        """The plugin manager of the plugins under test (and the core defaults only)."""
        if not self.plugins:
            raise TypeError(f"{type(self).__name__}.plugins is empty: name the plugin to test")
        return load_plugins(self.plugins)

    @pytest_asyncio.fixture
    async def conformance_hub(
        self,
        conformance_setup: Mapping[str, Any] | None,
        conformance_plugin_manager: KernelHubPluginManager,
    ) -> AsyncIterator[KernelHub]:
        """A hub with only the plugins under test; it shuts down what a test left running."""
        config = self.config if conformance_setup is None else conformance_setup
        async with KernelHub(plugin_manager=conformance_plugin_manager, config=config) as hub:
            yield hub

    async def assert_nothing_left(self, kernel: RunningKernel, state: Mapping[str, Any]) -> None:
        """Assert that nothing of *kernel* is left after it was shut down or killed.

        The default checks that the manager says the kernel is gone and, when
        :attr:`local_kernels`, what a local process leaves: no live process at
        the state's ``pid`` or in its ``pgid`` group, no ``connection_file``,
        and no path of the state left in the Jupyter runtime dir. Override it to
        check containers, tunnels or remote files, and call
        ``await super().assert_nothing_left(kernel, state)`` first.

        :param state: the manager's ``describe()`` output, taken before shutdown.
        """
        assert not await kernel.manager.is_alive(), f"{kernel.manager!r} is still alive"
        if not self.local_kernels:
            return  # pids and paths in the state belong to another machine
        pid, pgid = state.get("pid"), state.get("pgid")
        live = _live_pids(
            pid=pid if isinstance(pid, int) and pid > 0 else None,
            pgid=pgid if isinstance(pgid, int) and pgid > 0 else None,
        )
        assert not live, f"{kernel.type_id}: processes {live} (pid={pid}, pgid={pgid}) still run"
        rdir = runtime_dir().resolve()
        for key, value in state.items():
            if not isinstance(value, str) or not os.path.isabs(value):
                continue
            path = Path(value)
            # A test's check of a few local paths: blocking is harmless here.
            if key == "connection_file" or path.resolve().is_relative_to(rdir):  # noqa: ASYNC240
                left = path.exists()  # noqa: ASYNC240
                assert not left, f"{kernel.type_id}: {key} {value} was left behind"

    # ---- helpers ----

    async def _launch(self, hub: KernelHub, type_id: str) -> RunningKernel:
        # No automatic restarts: the battery kills kernels and checks that they stay dead.
        # (A call argument, not a plugin: the hub asks only the type's owner for a policy.)
        kernel = await hub.launch(type_id, ready_timeout=self.launch_timeout, restart=False)
        assert kernel.status == "RUNNING", kernel
        assert kernel.type_id == type_id
        return kernel

    async def _check_execute(self, client: AsyncKernelClient | KernelClient) -> None:
        token = f"kh-conformance-{uuid.uuid4().hex[:8]}"
        code = self.print_code.format(text=repr(token))
        content, text = await execute_output(client, code, timeout=self.timeout)
        assert content["status"] == "ok", content
        assert token in text, f"{token!r} not in the output {text!r}"

    # ---- the battery ----

    @pytest.mark.asyncio
    async def test_kernel_types_are_valid(self, conformance_hub: KernelHub, type_id: str) -> None:
        providers = {split_type_id(t)[0] for t in self.type_ids}
        answered = await conformance_hub.hooks.find_kernel_types(hub=conformance_hub)
        for plugin, note in answered:
            if isinstance(note, UnavailableType):  # a type it cannot offer here, and why
                assert note.provider in providers and note.reason, (plugin, note)
        found = [(plugin, kt) for plugin, kt in answered if isinstance(kt, KernelType)]
        ids = [kt.id for _, kt in found]
        assert type_id in ids, f"the plugins under test do not offer {type_id!r}, only {ids}"
        assert len(ids) == len(set(ids)), f"duplicate kernel type ids: {ids}"
        for plugin, kt in found:
            assert isinstance(kt, KernelType)
            assert kt.provider in providers, (
                f"plugin {plugin!r} offers {kt.id!r}, outside its providers {sorted(providers)}"
            )
            assert kt.id == f"{kt.provider}/{kt.name}"
            assert split_type_id(kt.id) == (kt.provider, kt.name)
            assert kt.display_name
            assert kt.interrupt_mode in ("signal", "message")
            data = kt.to_dict()
            assert json.loads(json.dumps(data)) == data, f"{kt.id}: to_dict() is not JSON"
            assert data["id"] == kt.id

    @pytest.mark.integration
    @pytest.mark.asyncio
    async def test_launch_execute_output(self, conformance_hub: KernelHub, type_id: str) -> None:
        kernel = await self._launch(conformance_hub, type_id)
        try:
            assert await kernel.manager.is_alive()
            assert kernel.id in conformance_hub.kernels
            async with kernel.client() as client:
                await self._check_execute(client)
        finally:
            await kernel.shutdown()

    @pytest.mark.integration
    @pytest.mark.asyncio
    async def test_interrupt_busy_loop(self, conformance_hub: KernelHub, type_id: str) -> None:
        kernel = await self._launch(conformance_hub, type_id)
        try:
            async with kernel.client() as client:
                reply = await interrupt_busy_loop(
                    client,
                    self.busy_code,
                    timeout=self.timeout,
                    interrupt_timeout=self.interrupt_timeout,
                )
                assert reply.content["status"] == "error", reply.content
                assert reply.content["ename"] == "KeyboardInterrupt", reply.content
                await self._check_execute(client)  # it survived the interrupt
        finally:
            await kernel.shutdown()

    @pytest.mark.integration
    @pytest.mark.asyncio
    async def test_kill(self, conformance_hub: KernelHub, type_id: str) -> None:
        kernel = await self._launch(conformance_hub, type_id)
        manager: KernelManager = kernel.manager  # a restarter may swap kernel.manager
        state = manager.describe()
        try:
            await asyncio.wait_for(manager.kill(), self.timeout)
            await asyncio.wait_for(manager.wait(), self.timeout)
            assert not await manager.is_alive()
            # Killing a dead kernel is not an error, and cleanup is idempotent.
            await asyncio.wait_for(manager.kill(), self.timeout)
            await manager.cleanup()
            await manager.cleanup()
        finally:
            await kernel.shutdown()
        assert kernel.status == "DEAD"
        await self.assert_nothing_left(kernel, state)

    @pytest.mark.integration
    @pytest.mark.asyncio
    async def test_shutdown_leaves_nothing(self, conformance_hub: KernelHub, type_id: str) -> None:
        kernel = await self._launch(conformance_hub, type_id)
        state = kernel.manager.describe()
        await asyncio.wait_for(kernel.shutdown(), self.timeout)
        assert kernel.status == "DEAD"
        assert kernel.id not in conformance_hub.kernels
        await asyncio.wait_for(kernel.manager.wait(), self.timeout)
        await self.assert_nothing_left(kernel, state)

    @pytest.mark.integration
    @pytest.mark.asyncio
    async def test_describe_and_reattach(self, conformance_hub: KernelHub, type_id: str) -> None:
        kernel = await self._launch(conformance_hub, type_id)
        manager: KernelManager = kernel.manager
        attached: RunningKernel | None = None
        try:
            state = manager.describe()
            assert isinstance(state, dict)
            wire = json.dumps(kernel.describe())  # what a host would persist
            saved = json.loads(wire)
            assert saved["state"] == json.loads(json.dumps(state))
            # The description records the owner; the hub routes make_manager to it.
            assert saved["plugin"] == conformance_hub.owner_of(type_id)
            saved.pop("kernel_id")  # a second RunningKernel of the same process: a new id
            attached = await conformance_hub.attach(**saved)
            assert attached.manager is not manager
            assert await attached.manager.is_alive()
            async with attached.client() as client:
                await self._check_execute(client)
            # The rebuilt manager controls the same kernel: killing through it ends it.
            await asyncio.wait_for(attached.manager.kill(), self.timeout)
            await asyncio.wait_for(manager.wait(), self.timeout)
            assert not await manager.is_alive()
        finally:
            if attached is not None:
                await attached.shutdown(now=True)
            await kernel.shutdown(now=True)
        await self.assert_nothing_left(kernel, state)

    def test_plugins_launch_what_they_offer(
        self, conformance_plugin_manager: KernelHubPluginManager
    ) -> None:
        """A plugin that offers kernel types implements ``launch`` for them.

        The hub routes ``launch``, ``make_manager`` and ``restart_policy`` to the
        plugin that offered a type, so a plugin needs no "is this mine?" check;
        but a plugin that offers types and cannot launch them fails every launch.
        """
        pm = conformance_plugin_manager
        # The core's own plugins (its defaults) are not under test.
        tested = [
            (name, plugin)
            for name, plugin in pm.list_name_plugin()
            if not name.startswith("kernel_hub.")
        ]
        offering = 0
        for name, plugin in tested:
            hooks = {caller.name for caller in pm.get_hookcallers(plugin) or []}
            if "find_kernel_types" not in hooks:
                continue
            offering += 1
            assert "launch" in hooks, (
                f"plugin {name!r} offers kernel types but implements no launch hook: "
                "add @hookimpl def launch(hub, kernel_type, request)"
            )
        assert offering, f"none of the plugins {[n for n, _ in tested]} offers kernel types"

    @pytest.mark.asyncio
    async def test_unknown_name_raises(self, conformance_hub: KernelHub) -> None:
        for provider in sorted({split_type_id(t)[0] for t in self.type_ids}):
            unknown = f"{provider}/kh-no-such-kernel-{uuid.uuid4().hex[:6]}"
            with pytest.raises(NoSuchKernelType) as info:
                await conformance_hub.launch(unknown)
            assert unknown in str(info.value)
            assert not conformance_hub.kernels
