"""The provider conformance suite, run on the spec plugin with a kernelspec of its own."""

from __future__ import annotations

import json
import sys

import kernel_hub_spec.plugin
import pytest

from kernel_hub.testing import ProviderConformance


class TestSpecConformance(ProviderConformance):
    plugins = [kernel_hub_spec.plugin]
    type_ids = ["spec/kh-conformance"]

    @pytest.fixture
    def conformance_setup(self, tmp_path, monkeypatch):
        """Put a kernelspec running this Python's ipykernel first on JUPYTER_PATH."""
        spec_dir = tmp_path / "jp" / "kernels" / "kh-conformance"
        spec_dir.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (spec_dir / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
        monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jp"))
        monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
        return None


class TestSpecConformanceByEntryPoint(ProviderConformance):
    """The same plugin loaded through its installed entry point, as a host loads it."""

    plugins = ["spec"]
    type_ids = ["spec/python3"]  # ipykernel's own kernelspec in this environment

    # One launch is enough to show the entry point works; the rest is above.
    test_interrupt_busy_loop = None  # type: ignore[assignment]
    test_kill = None  # type: ignore[assignment]
    test_describe_and_reattach = None  # type: ignore[assignment]
