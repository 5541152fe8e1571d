"""The console printer of ``run``, ``attach`` and ``execute_interactive``: malformed output."""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import pytest

from kernel_hub.client.console import MALFORMED, console_output_hook
from kernel_hub.testing.fakes import FakeKernel
from kernel_hub.wire.droplog import DropLog
from kernel_hub.wire.session import Session

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kernel_hub.wire.session import Message

#: Output messages whose content fields have the wrong types (issue #22 item 9).
MALFORMED_CONTENTS = [
    ("stream", {"name": "stdout", "text": 42}),
    ("stream", {"name": "stderr", "text": ["a", "list"]}),
    ("stream", {"name": "stdout", "text": None}),
    ("execute_result", {"data": ["text/plain", "x"]}),
    ("execute_result", {"data": {"text/plain": 7}}),
    ("display_data", {"data": "not an object"}),
    ("display_data", {"data": 3.5}),
    ("update_display_data", {"data": {"text/plain": {"nested": 1}}}),
    ("error", {"traceback": [1, 2, 3]}),
    ("error", {"traceback": "a string is not a list of lines", "ename": 1}),
    ("execute_result", {"data": [1]}),
]


def test_malformed_output_is_one_counted_line_not_a_traceback_each(caplog):
    session = Session(b"")
    drops = DropLog(logging.getLogger("kernel_hub.client"), "console output")
    out, err = io.StringIO(), io.StringIO()
    caplog.set_level(logging.DEBUG, logger="kernel_hub")
    assert len(MALFORMED_CONTENTS) == 11
    for msg_type, content in MALFORMED_CONTENTS:
        console_output_hook(session.msg(msg_type, content), stdout=out, stderr=err, drops=drops)
    good = session.msg("stream", {"name": "stdout", "text": "still printing\n"})
    console_output_hook(good, stdout=out, stderr=err, drops=drops)

    assert drops.counts == {MALFORMED: 11}
    records = [r for r in caplog.records if r.name.startswith("kernel_hub")]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].exc_info is None and MALFORMED in records[0].getMessage()
    assert "'stream'" in records[0].getMessage()  # the first one's detail names its type
    assert out.getvalue().endswith("still printing\n")
    drops.flush()  # the summary of the other 10, once
    assert "10 more" in caplog.records[-1].getMessage()


class MalformedOutputKernel(FakeKernel):
    """A fake kernel whose every execution publishes the 11 malformed output messages."""

    def respond(self, channel: str, req: Message) -> Iterator[tuple[str, Message]]:
        for reply in super().respond(channel, req):
            if reply[1].header["msg_type"] == "execute_reply":
                for msg_type, content in MALFORMED_CONTENTS:
                    yield ("iopub", self.session.msg(msg_type, content, parent=req))
            yield reply


@pytest.mark.asyncio
async def test_execute_interactive_counts_malformed_output_in_the_clients_drops(caplog):
    """Before: the drain logged 'output_hook ... failed' with a traceback, 11 times."""
    kernel = MalformedOutputKernel()
    caplog.set_level(logging.DEBUG, logger="kernel_hub")
    async with kernel.client() as client:
        reply = await client.execute_interactive("x = 1", timeout=10)
        assert reply.content["status"] == "ok"
        assert client.drops.counts.get(MALFORMED) == 11
        printer = [r for r in caplog.records if MALFORMED in r.getMessage()]
        assert len(printer) == 1
        assert [r for r in caplog.records if r.exc_info] == []
