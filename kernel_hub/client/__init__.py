"""Kernel clients: asyncio-native, and a blocking wrapper around it."""

from __future__ import annotations

from .asynchronous import AsyncKernelClient
from .console import console_output_hook
from .blocking import BlockingKernelClient

__all__ = ["AsyncKernelClient", "BlockingKernelClient", "console_output_hook"]
