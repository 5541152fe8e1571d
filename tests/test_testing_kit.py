"""The leak-check helpers of :mod:`kernel_hub.testing`, on real processes."""

from __future__ import annotations

import os
import subprocess
import uuid

from kernel_hub.testing import processes_with_env


def test_processes_with_env_finds_a_marked_process_until_it_ends():
    marker = f"KH_TEST_MARK={uuid.uuid4().hex}"
    name, _, value = marker.partition("=")
    proc = subprocess.Popen(["sleep", "60"], env={**os.environ, name: value})
    try:
        assert processes_with_env(marker) == [proc.pid]
        assert processes_with_env(marker + "x") == []  # the item must match exactly
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert processes_with_env(marker) == []
