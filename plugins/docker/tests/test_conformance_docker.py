"""The provider conformance suite, run on the docker plugin against the real engine and image."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import kernel_hub_docker.plugin
import pytest
from kernel_hub_docker.engine import get_client

from kernel_hub import AsyncKernelClient, RunningKernel
from kernel_hub.testing import ProviderConformance

pytestmark = [pytest.mark.docker, pytest.mark.integration]


class TestDockerConformance(ProviderConformance):
    plugins = [kernel_hub_docker.plugin]
    # One configured type and the type discovered from the test image's label.
    type_ids = ["docker/conformance", "docker/bookworm-py"]
    local_kernels = False  # the state names a container, not a local pid

    @pytest.fixture
    def conformance_setup(self, docker_image: str) -> Mapping[str, Any]:
        return {"docker": {"conformance": {"image": docker_image, "memory": "512m"}}}

    async def _check_execute(self, client: AsyncKernelClient) -> None:
        # Debian bookworm's ipykernel 6.17 clears its "abort queued executes after an error"
        # flag one loop turn after the error reply, so an execute sent at once after the
        # interrupted one can come back "aborted". A kernel_info round trip lets that turn pass.
        await client.kernel_info(timeout=self.timeout)
        await super()._check_execute(client)

    async def assert_nothing_left(self, kernel: RunningKernel, state: Mapping[str, Any]) -> None:
        from docker.errors import NotFound

        await super().assert_nothing_left(kernel, state)
        # After a death the restarter removes the container, and shutdown() of a kernel it
        # marked dead may return before that is done: wait for the kernel's end.
        await asyncio.wait_for(kernel.wait(), 60)
        with pytest.raises(NotFound):
            get_client().api.inspect_container(state["container_id"])
        assert not os.path.exists(state["temp_dir"]), f"{state['temp_dir']} was left behind"
