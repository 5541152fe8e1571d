"""Smoke test of ``bench/scale_bench.py``: it runs, reports every number and leaves nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "scale_bench.py"


@pytest.mark.slow
def test_scale_bench_small_sizes(tmp_path):
    out = tmp_path / "scale.json"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "4,8", "--rounds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads(out.read_text())
    assert [r["n"] for r in results] == [4, 8]
    for r in results:
        numbers = {k: v for k, v in r.items() if isinstance(v, int | float)}
        assert all(math.isfinite(v) for v in numbers.values()), numbers
        assert (r["shutdown_politely"], r["shutdown_killed"], r["shutdown_failed"]) == (
            r["n"],
            0,
            0,
        )
        assert r["leftovers"] == {"processes": [], "files": []}
        [line] = r["log"]  # the child's whole log: shutdown_all's one summary line
        assert line.startswith(f"INFO kernel_hub: shut down {r['n']} kernels in ")
    assert "| host RSS per kernel | KiB |" in res.stdout
    assert "nothing left behind" in res.stdout
