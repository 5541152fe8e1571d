"""Smoke test of ``bench/plugins_cost.py --quick``: it runs and reports every number."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "plugins_cost.py"


@pytest.mark.slow
def test_plugins_cost_quick_reports_both_variants(tmp_path):
    out = tmp_path / "cost.json"
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    for metric in ("list_s", "list_peak_mb", "host_rss_mb"):
        assert set(data["variants"][metric]) == {"all", "core", "ratio"}
        assert data["variants"][metric]["core"] > 0
    assert data["heavy_imported"] == []  # the point of the scenario; timings are not asserted
    assert "| list_s | s |" in res.stdout
