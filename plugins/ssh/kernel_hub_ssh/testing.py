"""The old name of :mod:`kernel_hub_ssh_testing`, the test kit, now a distribution of its own.

With ``pip install 'kernel-hub-ssh[testing]'`` this name gives that module itself;
without it, importing it fails with one line naming the extra.
"""

from __future__ import annotations

from kernel_hub.provider import alias_module

alias_module(__name__, "kernel_hub_ssh_testing", install="kernel-hub-ssh[testing]")
