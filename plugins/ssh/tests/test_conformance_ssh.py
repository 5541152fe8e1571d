"""The provider conformance suite, run on the ssh plugin against a real sshd on loopback.

The "remote" host is this machine, so what a launch leaves on the remote side
(nanny, kernel, workdir) is checked with this machine's process table and disk.
"""

from __future__ import annotations

import asyncio
import os
import socket

import kernel_hub_ssh.plugin
import pytest
from kernel_hub_ssh_testing import wait_gone

from kernel_hub.testing import ProviderConformance


class TestSSHConformance(ProviderConformance):
    pytestmark = [pytest.mark.ssh]
    plugins = [kernel_hub_ssh.plugin]
    type_ids = ["ssh/conformance"]
    local_kernels = False  # the state's pids and paths are the remote host's

    @pytest.fixture
    def conformance_setup(self, sshd, remote_python):
        table = sshd.kernel_table(python=str(remote_python), connect_timeout=15)
        return {"ssh": {"conformance": table}}

    async def assert_nothing_left(self, kernel, state):
        await super().assert_nothing_left(kernel, state)
        pids = [state[k] for k in ("nanny_pid", "kernel_pid") if state.get(k)]
        alive = await asyncio.to_thread(wait_gone, pids, self.timeout)
        assert not alive, f"remote processes {alive} outlived {kernel.type_id} ({state})"
        assert not os.path.exists(state["workdir"]), f"remote workdir {state['workdir']} left"
        # The remote ports are forwarded to local listeners: every one must be closed.
        infos = (kernel.connection_info, kernel.manager.connection_info)
        ports = {v for info in infos for k, v in info.items() if k.endswith("_port")}
        for port in sorted(ports):
            with pytest.raises(ConnectionRefusedError), socket.socket() as s:
                s.connect(("127.0.0.1", port))
