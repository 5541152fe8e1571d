"""DropLog: counts every drop, logs the first and then one summary per interval."""

from __future__ import annotations

import logging

from kernel_hub.wire.droplog import DropLog


def test_first_line_then_one_summary_per_interval_and_a_final_flush(caplog):
    now = [0.0]
    drops = DropLog(logging.getLogger("t"), "thing", interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        for i in range(40_000):
            now[0] = i / 1000  # 40 s of drops, one a millisecond
            drops.count("dropped junk", f"#{i}")
        drops.flush()
        drops.flush()  # nothing new: no line
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        "thing: dropped junk: #0 (further ones are counted and summarised every 10 s)"
    )
    assert len(lines) == 5, lines  # the first, three summaries (at 10, 20, 30 s), the flush
    assert lines[-1].endswith("40000 in all")
    assert drops.counts == {"dropped junk": 40_000}
    assert repr(drops) == "<DropLog thing [dropped junk=40000]>"


def test_kinds_are_counted_and_reported_apart(caplog):
    drops = DropLog(logging.getLogger("t"), "thing")
    with caplog.at_level(logging.WARNING, "t"):
        drops.count("a", n=3)
        drops.count("b")
        drops.count("a")
        drops.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert drops.counts == {"a": 4, "b": 1}
    assert len(lines) == 3 and "a: 1 more" in lines[2] and "4 in all" in lines[2]
