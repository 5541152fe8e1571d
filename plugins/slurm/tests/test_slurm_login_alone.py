"""``login`` without the ssh plugin: the plugin works alone, and names the extra when needed.

No cluster and no sshd: the runner is chosen before Slurm is contacted.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import kernel_hub_slurm.plugin
import pytest

from kernel_hub import KernelHub
from kernel_hub.conformance import load_plugins
from kernel_hub.provider import LaunchError


def test_types_without_login_never_import_the_ssh_plugin():
    code = textwrap.dedent(
        """
        import asyncio, sys
        import kernel_hub_slurm.plugin
        from kernel_hub_slurm import cluster, launch, manager
        from kernel_hub import KernelHub
        from kernel_hub.conformance import load_plugins

        async def main():
            config = {"slurm": {"k": {}, "far": {"login": "hpc"}}}
            pm = load_plugins([kernel_hub_slurm.plugin])
            async with KernelHub(plugin_manager=pm, config=config) as hub:
                types = sorted(t.id for t in await hub.find_kernel_types())
            print(types, [m for m in sys.modules if m.startswith(("kernel_hub_ssh", "asyncssh"))])

        asyncio.run(main())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    # Listing a type with login does not connect, nor import SSH: only a launch does.
    assert out.strip() == "['slurm/far', 'slurm/k'] []"


@pytest.mark.asyncio
async def test_login_without_the_ssh_plugin_names_the_extra(monkeypatch):
    # As in a venv without kernel-hub-ssh (the plugin's own CI suite has none).
    monkeypatch.setitem(sys.modules, "kernel_hub_ssh", None)
    monkeypatch.setitem(sys.modules, "kernel_hub_ssh.connection", None)
    config = {"slurm": {"far": {"login": "hpc"}}}
    async with KernelHub(
        plugin_manager=load_plugins([kernel_hub_slurm.plugin]), config=config
    ) as hub:
        with pytest.raises(LaunchError) as info:
            await hub.launch("slurm/far", ready_timeout=10)
    message = str(info.value)
    assert "[slurm.far] login = 'hpc'" in message
    assert message.endswith("pip install 'kernel-hub-slurm[ssh]'"), message
    assert "\n" not in message


def test_reattaching_a_login_kernel_without_the_ssh_plugin_names_the_extra(monkeypatch):
    from kernel_hub_slurm.manager import SlurmKernelManager

    monkeypatch.setitem(sys.modules, "kernel_hub_ssh", None)
    monkeypatch.setitem(sys.modules, "kernel_hub_ssh.connection", None)
    state = {"job_id": "7", "runner": {"kind": "ssh", "ssh": {"host": "login"}}}
    info = {"ip": "127.0.0.1", "key": "k", "nanny_control_port": 1, "nanny_events_port": 2}
    with pytest.raises(LaunchError, match=r"pip install 'kernel-hub-slurm\[ssh\]'$"):
        SlurmKernelManager.from_state(info, state, type_id="slurm/far")
