"""Terminal programs under test: ``kernel-hub`` run to its end, and one on a pipe.

:func:`run_cli` runs this Python's ``kernel-hub`` and returns its exit status and
output. :class:`PipedConsole` keeps a program (``jupyter console``) on a pipe: lines
in, output read by a thread; tests wait for text in it with a deadline, never by
sleeping.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PipedConsole", "run_cli"]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``kernel-hub ARGS`` (this Python's) to its end, its output captured as text.

    :param env: set over this process's environment (e.g. ``KERNEL_HUB_CONFIG``).
    """
    return subprocess.run(
        [sys.executable, "-m", "kernel_hub", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class PipedConsole:
    """Run *argv* with stdin and stdout (stderr merged) on pipes.

    :param argv: the command line.
    :param env: its environment (``PYTHONUNBUFFERED=1`` is added).
    """

    def __init__(self, argv: list[str], env: Mapping[str, str]) -> None:
        self.name = argv[0]
        self.proc = subprocess.Popen(
            argv,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        #: Everything the program printed so far.
        self.output = ""
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read(1):
            with self.changed:
                self.output += chunk
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def send(self, line: str) -> None:
        """Type *line* and Enter."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def seen(self, text: str, start: int = 0, timeout: float = 120.0) -> int:
        """Return where *text* ends in the output after *start*, or -1 after *timeout*."""
        with self.changed:
            self.changed.wait_for(
                lambda: text in self.output[start:] or not self.reader.is_alive(), timeout
            )
            at = self.output.find(text, start)
        return at + len(text) if at >= 0 else -1

    def wait_for(self, text: str, start: int = 0, timeout: float = 120.0) -> int:
        """Return where *text* ends in the output after *start*; fail at *timeout*."""
        at = self.seen(text, start, timeout)
        assert at >= 0, f"no {text!r} from {self.name}:\n{self.output[-3000:]}"
        return at

    def close(self) -> None:
        """Kill the program if it still runs, and release its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.reader.join(30)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
