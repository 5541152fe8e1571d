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


def test_the_sample_plugins_output_matches_the_real_command():
    """Issue #22 item 11: the tutorial's ``kernel-hub plugins`` sample had drifted.

    The sample shows a user's install (the core, spec, ipykernel and nice); this
    workspace has more plugins, so each sample row is compared with the real row
    of the same name, field by field, and the header as it is.
    """
    import os
    import subprocess
    import sys

    doc = (ROOT / "docs" / "writing-a-plugin.md").read_text()
    sample = doc.split("$ kernel-hub plugins\n", 1)[1].split("\n$ ", 1)[0].splitlines()
    res = subprocess.run(
        [sys.executable, "-m", "kernel_hub", "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert res.returncode == 0, res.stderr
    real = res.stdout.splitlines()

    def fields(line: str) -> list[str]:
        return re.split(r"\s{2,}", line.strip())

    assert fields(sample[0]) == fields(real[0]) == ["NAME", "DISTRIBUTION", "VERSION", "HOOKS"]
    real_rows = {fields(line)[0]: fields(line) for line in real[1:]}
    assert len(sample) > 1
    for line in sample[1:]:
        row = fields(line)
        assert real_rows.get(row[0]) == row, f"the sample row {line!r} is not what the command says"
