"""kernel_hub provider plugin: spec."""
