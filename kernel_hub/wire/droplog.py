"""Count what the client drops, and say so in a few log lines instead of one per message.

A flood of bad messages (40,000 forged ones, say) must not become 40,000 WARNING
lines: :class:`DropLog` counts every drop by kind, logs the first of each kind
at once and after that at most one summary per interval. No timer is involved:
the summary goes out with the next drop after the interval, and :meth:`flush`
(called when the client closes) reports what is still unreported.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

__all__ = ["DropLog"]


class DropLog:
    """Counters of dropped or lost messages, with rate-limited warnings.

    :param logger: where the warnings go.
    :param what: names the owner in each line (e.g. the client's repr).
    :param interval: the least time in seconds between two lines of one kind.
    :param clock: a monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self.what = what
        self.interval = interval
        self._clock = clock
        #: Drops per kind, since the start.
        self.counts: dict[str, int] = {}
        self._unreported: dict[str, int] = {}
        self._last_line: dict[str, float] = {}

    def __repr__(self) -> str:
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items())) or "none"
        return f"<DropLog {self.what} [{counts}]>"

    def count(self, kind: str, detail: str = "", n: int = 1) -> None:
        """Count *n* drops of *kind*; log the first at once, then at most one line per interval.

        :param kind: what happened, as a phrase ("dropped messages with a bad signature").
        :param detail: about this drop (shown on the first line of its kind only).
        :param n: how many were dropped at once (the first line covers all of them).
        """
        total = self.counts.get(kind, 0) + n
        self.counts[kind] = total
        now = self._clock()
        last = self._last_line.get(kind)
        if last is None:
            self._last_line[kind] = now
            self._log.warning(
                "%s: %s%s (further ones are counted and summarised every %g s)",
                self.what,
                kind,
                f": {detail}" if detail else "",
                self.interval,
            )
            return
        self._unreported[kind] = self._unreported.get(kind, 0) + n
        if now - last >= self.interval:
            self._summarise(kind, now)

    def flush(self) -> None:
        """Log a summary of every kind with unreported drops (e.g. when closing)."""
        now = self._clock()
        for kind in list(self._unreported):
            self._summarise(kind, now)

    def _summarise(self, kind: str, now: float) -> None:
        n = self._unreported.pop(kind, 0)
        if not n:
            return
        since = now - self._last_line[kind]
        self._last_line[kind] = now
        self._log.warning(
            "%s: %s: %d more in the last %.0f s, %d in all",
            self.what,
            kind,
            n,
            since,
            self.counts[kind],
        )
