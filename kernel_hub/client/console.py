"""Console-style output and input for a client: what ``execute_interactive`` uses by default."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from typing import TYPE_CHECKING, Any, TextIO

from ..wire.droplog import DropLog

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..wire.session import Message

__all__ = ["MALFORMED", "console_output_hook", "terminal_input"]

log = logging.getLogger("kernel_hub.client")

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: The :class:`~kernel_hub.wire.droplog.DropLog` kind of an output message the printer cannot show.
MALFORMED = "skipped output messages with malformed content"

#: The printer's counts for this process: one warning, then a summary at most every 10 s.
_DROPS = DropLog(log, "console output")


def console_output_hook(
    msg: Message,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    drops: DropLog | None = None,
) -> None:
    """Print one IOPub message as a console would: streams, results, displays and tracebacks.

    A message whose content has wrong-typed fields (a ``text`` that is not a
    string, ``data`` that is not an object, ...) is skipped and counted in
    *drops* (default: the process's), which logs the first and then a
    periodic summary, never a traceback per message.

    :param drops: where malformed messages are counted, under :data:`MALFORMED`.
    """
    try:
        _print(msg, stdout or sys.stdout, stderr or sys.stderr)
    except (TypeError, AttributeError, ValueError) as exc:
        msg_type = msg.header.get("msg_type")
        (drops or _DROPS).count(MALFORMED, f"a {msg_type!r} message ({exc})")


def _field(content: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = content.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise TypeError(f"{key!r} is {type(value).__name__}, not {kind.__name__}")
    return value


def _print(msg: Message, out: TextIO, err: TextIO) -> None:
    """Print *msg*; raise :class:`TypeError` naming a wrong-typed field before printing it."""
    msg_type = msg.header.get("msg_type")
    content = msg.content
    if msg_type == "stream":
        stream = err if content.get("name") == "stderr" else out
        stream.write(_field(content, "text", str, ""))
        stream.flush()
    elif msg_type in ("execute_result", "display_data", "update_display_data"):
        data = _field(content, "data", dict, {})
        text = _field(data, "text/plain", str, None)
        if text is None and data:
            text = f"<{', '.join(sorted(map(str, data)))}>"
        if text is not None:
            out.write(text + "\n")
            out.flush()
    elif msg_type == "error":
        tb = _field(content, "traceback", list, None)
        if tb is not None and not all(isinstance(line, str) for line in tb):
            raise TypeError("'traceback' must be a list of strings")
        text = "\n".join(tb or [f"{content.get('ename')}: {content.get('evalue')}"]) + "\n"
        if not getattr(err, "isatty", lambda: False)():
            text = _ANSI_RE.sub("", text)  # kernels colour tracebacks for terminals only
        err.write(text)
        err.flush()


async def terminal_input(prompt: str, password: bool) -> str:
    """Read one line from the terminal (hidden for a password) without blocking the loop."""
    import getpass

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, getpass.getpass if password else input, prompt)
