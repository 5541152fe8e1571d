"""Smoke test of the benchmark: ``bench/bench.py --quick`` runs and reports every number.

It asserts the shape of the JSON only, never a timing: timings belong to the
benchmark's own table, read by a person on a quiet machine.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench.py"
VARIANTS = ("raw", "kernel_hub", "jupyter_client")
SCENARIOS = ("start_stop", "execute", "iopub_flood", "concurrent", "footprint")


def _numbers(obj):
    """Yield every number nested in *obj*."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _numbers(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _numbers(value)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(150)
def test_bench_quick_reports_all_variants_and_scenarios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=140,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    result = json.loads(out.read_text())

    assert set(SCENARIOS) <= set(result["samples"])
    for scenario in SCENARIOS:
        per_variant = result["samples"][scenario]
        for variant in VARIANTS:
            numbers = list(_numbers(per_variant[variant]))
            assert numbers, f"{scenario}/{variant} has no samples"
            assert all(math.isfinite(x) for x in numbers), f"{scenario}/{variant}: {numbers}"

    summary = result["summary"]
    assert summary, "the summary table is empty"
    for key, row in summary.items():
        for variant in VARIANTS:
            assert isinstance(row[variant], int | float), f"{key}/{variant}: {row[variant]!r}"
            assert math.isfinite(row[variant]), f"{key}/{variant}: {row[variant]!r}"

    checks = result["checks"]
    assert checks["kernel_side"]["argv_identical"]
    assert checks["kernel_side"]["env_identical"], checks["kernel_side"]["env_differences"]
    assert all(checks["iopub_lines_complete"].values()), checks["iopub_lines_complete"]
    assert checks["leftovers"] == {"processes": [], "files": []}
