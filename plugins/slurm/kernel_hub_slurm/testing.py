"""The old name of the test kit, which is now the distribution ``kernel-hub-slurm-testing``.

The kit is no longer in this plugin's wheel; ``pip install 'kernel-hub-slurm[testing]'``
installs it, as :mod:`kernel_hub_slurm_testing`. This module makes the old import path
name that same module, so code written for the old path keeps working with the extra,
and fails with one line naming the extra without it.
"""

from __future__ import annotations

import sys

try:
    import kernel_hub_slurm_testing
except ModuleNotFoundError as exc:  # the kit, or what the extra brings for it (pytest, ...)
    raise ModuleNotFoundError(
        f"{exc}: the test kit needs pip install 'kernel-hub-slurm[testing]'", name=exc.name
    ) from None

sys.modules[__name__] = kernel_hub_slurm_testing
