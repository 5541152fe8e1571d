"""kernel_hub provider plugin: ipykernel."""
