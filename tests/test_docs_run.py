"""Every ```python block of the docs runs as written (issue 16, item 8).

The blocks of README.md, docs/*.md, plugins/*/README.md and examples/*/README.md
are collected; each one is compiled, and run as a script in a fresh
interpreter (empty kernel_hub config, a temporary working directory) unless
the line before it says otherwise, in an HTML comment that the rendered page
does not show:

- ``<!-- docs-test: skip REASON -->``: compiled only; REASON says why (a block
  that needs a remote host, or a fragment of a larger file).
- ``<!-- docs-test: requires SERVICE -->`` (``docker``, ``ssh``): run, with
  that pytest marker, so it is deselected with the service's tests.

A block captioned with a repository file it shows (a line ```path`:`` before
it, as in the plugin tutorial) is that file: tests/test_tutorial.py pins the
copy to the file, and the file's own tests run it, so here it is only compiled.
A block of any language captioned with a path in the home directory
(```~/.local/share/jupyter/kernels/x/kernel.json`:``) is a file the reader is
told to create: it is written into a temporary ``HOME`` for the doc's blocks.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kernel_hub.testing import processes_with_env, wait_pid_gone

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [
        ROOT / "README.md",
        *ROOT.glob("docs/*.md"),
        *ROOT.glob("plugins/*/README.md"),
        *ROOT.glob("examples/*/README.md"),
    ]
)
FENCE = re.compile(r"^```python\n(.*?)^```$", re.M | re.S)
ANY_FENCE = re.compile(r"^```\w*\n(.*?)^```$", re.M | re.S)
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(skip|requires)\s*(.*?)\s*-->")
CAPTION = re.compile(r"^`([^`]+)`:$")
SERVICES = {"docker", "ssh"}
#: Generous: a block may start a kernel or two on a loaded 2-core machine.
BLOCK_TIMEOUT = 120


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    code: str
    mode: str  # "run", "skip" or "file"
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _before(text: str, start: int) -> str:
    """Return the last non-empty line before offset *start*."""
    lines = [line for line in text[:start].splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def collect(path: Path) -> list[Block]:
    text = path.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        code = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        before = _before(text, match.start())
        directive = DIRECTIVE.search(before)
        caption = CAPTION.match(before)
        if directive and directive.group(1) == "skip":
            blocks.append(Block(path, line, code, "skip", directive.group(2)))
        elif directive:
            blocks.append(Block(path, line, code, "run", directive.group(2)))
        elif caption and (ROOT / caption.group(1)).is_file():
            blocks.append(Block(path, line, code, "file", caption.group(1)))
        else:
            blocks.append(Block(path, line, code, "run"))
    return blocks


BLOCKS = [block for doc in DOCS for block in collect(doc)]


def home_files(path: Path) -> dict[str, str]:
    """Return ``{path under ~: text}`` of the blocks of *path* captioned with a home path."""
    text = path.read_text()
    files = {}
    for match in ANY_FENCE.finditer(text):
        caption = CAPTION.match(_before(text, match.start()))
        if caption and caption.group(1).startswith("~/"):
            files[caption.group(1)[2:]] = match.group(1)
    return files


def _param(block: Block) -> object:
    marks = [pytest.mark.integration]  # most blocks start a real kernel
    if block.mode == "run" and block.reason:
        service = block.reason.split()[0]
        assert service in SERVICES, f"{block.id}: unknown service {service!r}"
        marks.append(getattr(pytest.mark, service))
    return pytest.param(block, id=block.id, marks=marks)


def test_blocks_are_found_in_every_kind_of_doc():
    where = {b.path.relative_to(ROOT).parts[0] for b in BLOCKS}
    assert {"README.md", "docs", "plugins"} <= where
    assert sum(b.mode == "run" for b in BLOCKS) >= 5


@pytest.mark.parametrize("block", [pytest.param(b, id=b.id) for b in BLOCKS])
def test_every_block_compiles(block: Block):
    """Even a skipped block must be valid Python: no top-level ``await`` or ``async with``."""
    compile(block.code, block.id, "exec")
    if block.mode == "skip":
        assert block.reason, f"{block.id}: say why the block is skipped"


# pytest-timeout must not fire first: the block's process group is killed in ``finally``.
@pytest.mark.timeout(BLOCK_TIMEOUT + 60)
@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS if b.mode == "run"])
def test_every_block_runs(block: Block, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(block.code)
    config = tmp_path / "kernel-hub.toml"
    config.write_text("")
    runtime = tmp_path / "runtime"  # connection files of the block's kernels, checked below
    runtime.mkdir()
    env = {**os.environ, "KERNEL_HUB_CONFIG": str(config), "JUPYTER_RUNTIME_DIR": str(runtime)}
    files = home_files(block.path)
    if files:
        home = tmp_path / "home"
        for rel, text in files.items():
            (home / rel).parent.mkdir(parents=True, exist_ok=True)
            (home / rel).write_text(text)
        env["HOME"] = str(home)
        # The block reads those files where a user's own dirs are: under HOME, not in the
        # suite's private stand-ins for them (the root conftest's isolated_user_files).
        for name in ("XDG_CONFIG_HOME", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR"):
            env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # its kernels' reaper takes them along
            proc.wait()
        # Every process the block started carries its private runtime dir in its environment.
        left = [
            pid
            for pid in processes_with_env(f"JUPYTER_RUNTIME_DIR={runtime}")
            if not wait_pid_gone(pid, 20)
        ]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert not left, f"{block.id} left processes running: {left}"
    assert proc.returncode == 0, f"{block.id} failed:\n{out}\n{err}"
    assert "Traceback" not in err, f"{block.id}:\n{err}"
    # A shutdown that worked is not reported as unanswered (issue #22: the nanny-protocol
    # example raced the launcher's own shutdown of the nanny and said so in 4 runs of 5).
    assert "got no answer" not in err, f"{block.id}:\n{err}"
    # A block that shuts its kernels down leaves no connection or log file behind.
    assert not os.listdir(runtime), f"{block.id} left files: {sorted(os.listdir(runtime))}"
