"""Kernel clients: asyncio-native, and a blocking wrapper around it."""

from __future__ import annotations

from .asynchronous import AsyncKernelClient
from .blocking import BlockingKernelClient
from .console import console_output_hook

__all__ = ["AsyncKernelClient", "BlockingKernelClient", "console_output_hook"]
