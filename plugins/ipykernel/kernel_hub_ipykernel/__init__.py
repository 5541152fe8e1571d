"""kernel_hub provider plugin ``ipykernel``: this environment's ipykernel, ``ipykernel/python3``."""

from __future__ import annotations

from .launcher import find_ipykernel_types, ipykernel_available

__all__ = ["find_ipykernel_types", "ipykernel_available"]
