"""kernel_hub provider plugin ``nice``: this Python's ipykernel under ``nice -n N``."""
