"""Jupyter bridge."""
