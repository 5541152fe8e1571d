"""Console-style output and input for a client: what ``execute_interactive`` uses by default."""

from __future__ import annotations

import asyncio
import re
import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ..session import Message

__all__ = ["console_output_hook", "terminal_input"]

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def console_output_hook(
    msg: Message, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> None:
    """Print one IOPub message as a console would: streams, results, displays and tracebacks."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    msg_type = msg.header.get("msg_type")
    content = msg.content
    if msg_type == "stream":
        (err if content.get("name") == "stderr" else out).write(content.get("text", ""))
        (err if content.get("name") == "stderr" else out).flush()
    elif msg_type in ("execute_result", "display_data", "update_display_data"):
        data = content.get("data", {})
        text = data.get("text/plain")
        if text is None and data:
            text = f"<{', '.join(sorted(data))}>"
        if text is not None:
            out.write(text + "\n")
            out.flush()
    elif msg_type == "error":
        tb = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
        text = "\n".join(tb) + "\n"
        if not getattr(err, "isatty", lambda: False)():
            text = _ANSI_RE.sub("", text)  # kernels colour tracebacks for terminals only
        err.write(text)
        err.flush()


async def terminal_input(prompt: str, password: bool) -> str:
    """Read one line from the terminal (hidden for a password) without blocking the loop."""
    import getpass

    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, getpass.getpass if password else input, prompt)
