"""Hook implementations of the ipykernel provider."""

from __future__ import annotations
