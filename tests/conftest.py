"""Fixtures for the core tests that start real kernels."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from kernel_hub import KernelHub, RunningKernel

PYTHON = "ipykernel/python3"


@pytest_asyncio.fixture
async def hub() -> AsyncIterator[KernelHub]:
    """A hub with the installed plugins and an empty config; shuts its kernels down after."""
    async with KernelHub(config={}) as hub:
        yield hub
    assert not hub.kernels


@pytest_asyncio.fixture
async def kernel(hub: KernelHub) -> AsyncIterator[RunningKernel]:
    """A real ipykernel of this Python, ready."""
    kernel = await hub.launch(PYTHON)
    yield kernel
    await kernel.shutdown()
