"""What the ``kernel-hub`` command shows a person: exit codes, one-line errors, progress, Ctrl-C.

Exit codes (documented in docs/cli.md, pinned by tests/test_cli_newcomer.py):

====  =====================================================================
0     success
1     the code raised (``run``, ``attach -c``), or a launched kernel ended
2     usage or configuration: a bad option, an unreadable file, an unknown
      kernel type, a bad config file
3     the kernel could not be started, or is not running (a stale file)
4     timed out: no kernel within ``--start-timeout``, or the code did not
      finish within ``--timeout``
130   interrupted (Ctrl-C)
====  =====================================================================
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from ..contract.errors import KernelHubError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..contract.events import KernelEvent

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CommandError",
    "CtrlC",
    "Progress",
    "stop_on_signals",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_TIMEOUT = 4
EXIT_INTERRUPTED = 130


class CommandError(KernelHubError):
    """A user-facing failure of a command: one line, and the exit status to leave with.

    :param message: what went wrong and what to do, in the words of the command line.
    :param exit_status: one of the ``EXIT_*`` codes.
    :param output: the kernel's last output, printed below the error line, marked
        as the kernel's (a :class:`~kernel_hub.LaunchError`'s ``output``).
    """

    def __init__(self, message: str, exit_status: int = EXIT_USAGE, *, output: str = "") -> None:
        super().__init__(message)
        self.exit_status = exit_status
        self.output = output

    @classmethod
    def unreadable(cls, what: str, exc: OSError | ValueError, *, hint: str) -> CommandError:
        """Return the error for a file the user named that could not be read.

        :param what: the file, as the message names it (``"the code file 'x.py'"``).
        :param exc: why (an ``OSError`` says it in its ``strerror``).
        :param hint: what to give instead.
        """
        reason = getattr(exc, "strerror", None) or str(exc)
        return cls(f"cannot read {what} ({reason.lower()}); {hint}")


#: Frames of the terminal spinner.
_SPINNER = "|/-\\"


class Progress:
    """Show what a launch is waiting for, fed by the hub's events.

    On a terminal one status line is redrawn in place (a spinner, the last
    step's message and the seconds spent), from the ``starting`` event on;
    elsewhere (a pipe, a log file) each ``progress`` message is printed once,
    as a plain line, and a quick start prints nothing. ``close()`` erases
    the status line so that the kernel's output starts on a clean line.

    :param stream: where to write (default ``sys.stderr``).
    :param tty: force terminal mode on or off (default: ``stream.isatty()``).
    :param interval: seconds between spinner frames on a terminal.
    """

    def __init__(
        self, stream: TextIO | None = None, *, tty: bool | None = None, interval: float = 0.1
    ) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.message = ""
        self._since = time.monotonic()
        self._frames = itertools.cycle(_SPINNER)
        self._ticker: asyncio.TimerHandle | None = None
        self._drawn = False
        self._closed = False

    def __repr__(self) -> str:
        mode = "tty" if self.tty else "lines"
        return f"<Progress [{mode}{' CLOSED' if self._closed else ''}] {self.message!r}>"

    def on_event(self, event: KernelEvent) -> None:
        """Take one hub event: ``starting`` and ``progress`` become the current step."""
        if self._closed:
            return
        if event.kind == "starting" and self.tty:
            self.show(f"starting kernel {event.type_id}")
        elif event.kind == "progress":
            self.show(str(event.data.get("message") or event.describe()))

    def show(self, message: str) -> None:
        """Make *message* the step being waited for."""
        if self._closed or message == self.message:
            return
        self.message = message
        self._since = time.monotonic()
        if not self.tty:
            print(f"kernel-hub: {message}", file=self.stream, flush=True)
            return
        self._draw()
        if self._ticker is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test drawing by hand): no animation
        self._ticker = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        if not self._closed:
            self._draw()
            self._schedule()

    def _draw(self) -> None:
        elapsed = time.monotonic() - self._since
        line = f"{next(self._frames)} {self.message} ({elapsed:.0f} s)"
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Stop the spinner and erase its line; later events are ignored."""
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False


class CtrlC:
    """Count Ctrl-C presses on the running loop and call back on each one.

    Installed for the duration of a ``with`` block; the previous SIGINT
    disposition comes back afterwards.

    :param on_press: called on the loop with the press number (1, 2, ...).
    """

    def __init__(self, on_press: Callable[[int], None]) -> None:
        self.on_press = on_press
        self.presses = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Any = None

    def __repr__(self) -> str:
        return f"<CtrlC presses={self.presses}>"

    def _pressed(self) -> None:
        self.presses += 1
        self.on_press(self.presses)

    def __enter__(self) -> CtrlC:
        self._loop = asyncio.get_running_loop()
        self._previous = signal.getsignal(signal.SIGINT)
        self._loop.add_signal_handler(signal.SIGINT, self._pressed)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGINT)
            self._loop = None
            # The loop puts Python's default handler back (KeyboardInterrupt anywhere); the
            # one before was asyncio.run's, which cancels the main task so that it cleans up.
            if self._previous is not None:
                signal.signal(signal.SIGINT, self._previous)


def stop_on_signals() -> asyncio.Event:
    """Return an event that SIGINT and SIGTERM set: how ``launch`` and ``pool`` are stopped."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
