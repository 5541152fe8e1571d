"""docs/writing-a-plugin.md shows the real files of examples/nice, and their real size."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "writing-a-plugin.md"
EXAMPLE = ROOT / "examples" / "nice"

# A caption line "`examples/nice/<path>`:" followed by a fenced block with that file's text.
BLOCK = re.compile(r"^`(examples/nice/[^`]+)`:\n\n```\w*\n(.*?)^```$", re.M | re.S)


def test_every_embedded_file_is_the_real_file():
    blocks = BLOCK.findall(TUTORIAL.read_text())
    shown = {path for path, _ in blocks}
    assert shown >= {
        "examples/nice/pyproject.toml",
        "examples/nice/kernel_hub_nice/provider.py",
        "examples/nice/kernel_hub_nice/plugin.py",
        "examples/nice/tests/test_conformance_nice.py",
    }, shown
    for path, text in blocks:
        assert text == (ROOT / path).read_text(), f"the tutorial's copy of {path} is stale"


def test_the_stated_line_count_is_true_and_under_60():
    lines = sum(len(p.read_text().splitlines()) for p in (EXAMPLE / "kernel_hub_nice").glob("*.py"))
    assert lines < 60
    assert f"**{lines} lines of Python**" in TUTORIAL.read_text()


def test_readme_points_plugin_authors_to_the_tutorial():
    assert "docs/writing-a-plugin.md" in (ROOT / "README.md").read_text()
