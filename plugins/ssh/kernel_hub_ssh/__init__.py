"""kernel_hub provider plugin ``ssh``: kernels on other machines over SSH, as ``ssh/<name>``.

Declare remote kernel types in the kernel_hub config file (``[ssh.<name>]``
tables, see :mod:`kernel_hub_ssh.config`); the plugin ships the nanny over
SSH, starts the kernel on the remote loopback, and forwards its ports to
127.0.0.1 here.
"""

from __future__ import annotations

from .config import PROVIDER, SSHHostConfig, SSHKernelConfig, parse_config

__all__ = ["PROVIDER", "SSHHostConfig", "SSHKernelConfig", "parse_config"]
