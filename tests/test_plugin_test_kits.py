"""The plugins' test kits are distributions of their own (issue 22, item 12).

``kernel-hub-<x>[testing]`` installs ``kernel-hub-<x>-testing``, importable as
``kernel_hub_<x>_testing``; the old path ``kernel_hub_<x>.testing`` names that
same module, and says in one line which extra to install when the kit is missing.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PLUGINS = ["ssh", "slurm", "jupyter"]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_the_old_path_is_the_kit_itself(plugin):
    kit = importlib.import_module(f"kernel_hub_{plugin}_testing")
    assert importlib.import_module(f"kernel_hub_{plugin}.testing") is kit


@pytest.mark.parametrize("plugin", PLUGINS)
def test_the_old_path_without_the_kit_names_the_extra(plugin):
    code = (
        f"import sys; sys.modules['kernel_hub_{plugin}_testing'] = None\n"
        f"import kernel_hub_{plugin}.testing\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ModuleNotFoundError: ")
    assert last.endswith(f"pip install 'kernel-hub-{plugin}[testing]'")
