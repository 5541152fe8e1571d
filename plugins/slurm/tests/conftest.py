"""Fixtures of the Slurm plugin's tests: a real one-node Slurm cluster, started once per session."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from kernel_hub_slurm_testing import (  # noqa: F401 - the session fixture slurm_cluster
    SlurmCluster,
    slurm_cluster_fixture,
)


@pytest.fixture
def slurm_table(slurm_cluster: SlurmCluster, tmp_path: Path) -> dict[str, Any]:
    """A ``[slurm.<name>]`` table for the test cluster: 1 CPU, this Python, a private job dir."""
    return {
        "python": sys.executable,
        "cpus": 1,
        "poll_interval": 0.5,
        "watch_interval": 1,
        "start_timeout": 120,
        "job_dir": str(tmp_path / "jobs"),
    }
