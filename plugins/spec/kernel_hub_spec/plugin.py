"""Hook implementations of the spec provider."""

from __future__ import annotations
