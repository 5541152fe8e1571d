"""kernel_hub: find, launch, watch and talk to Jupyter kernels, wherever they run."""
