"""kernel-hub-slurm: Jupyter kernels as Slurm batch jobs, offered as ``slurm/<name>`` kernel types.

Each ``[slurm.<name>]`` table of the kernel_hub config file is one kernel
type; see ``README.md`` of this distribution for the fields and how a launch
works (``sbatch``, a nanny next to the kernel, a signed dial-back).
"""

from __future__ import annotations

__all__: list[str] = []
