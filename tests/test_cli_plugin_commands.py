"""Plugin subcommands through the ``kernel_hub.cli`` entry-point group, and CLI progress output."""

from __future__ import annotations

import importlib.metadata
import io
import logging

import kernel_hub.cli as cli
from kernel_hub.cli.terminal import Progress
from kernel_hub.contract.events import KernelEvent


def add_hello(subparsers) -> None:
    p = subparsers.add_parser("hello", help="say hello")
    p.add_argument("--name", default="world")
    p.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)


async def _async_cmd(args) -> int:
    print("async ran")
    return 3


def add_async(subparsers) -> None:
    subparsers.add_parser("later").set_defaults(func=_async_cmd)


def broken(subparsers) -> None:
    raise RuntimeError("plugin bug")


def fake_entry_points(monkeypatch, *eps: importlib.metadata.EntryPoint) -> None:
    real = cli.entry_points

    def entry_points(group: str):
        if group == cli.CLI_ENTRYPOINT_GROUP:
            return list(eps)
        return real(group)

    monkeypatch.setattr(cli, "entry_points", entry_points)


def ep(name: str, attr: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, f"{__name__}:{attr}", cli.CLI_ENTRYPOINT_GROUP)


def test_plugin_commands_are_added_and_dispatched(monkeypatch, capsys):
    import sys

    # Entry points are resolved by module name; this test module is importable under its own.
    monkeypatch.setitem(sys.modules, __name__, sys.modules[__name__])
    fake_entry_points(monkeypatch, ep("hello", "add_hello"), ep("later", "add_async"))
    assert cli.main(["hello", "--name", "hub"]) == 0
    assert cli.main(["later"]) == 3
    assert capsys.readouterr().out == "hello hub\nasync ran\n"


def test_broken_or_blocked_plugin_commands_do_not_break_the_cli(monkeypatch, caplog, capsys):
    import sys

    monkeypatch.setitem(sys.modules, __name__, sys.modules[__name__])
    monkeypatch.setenv("KERNEL_HUB_DISABLE_PLUGINS", "hello")
    fake_entry_points(
        monkeypatch, ep("bad", "broken"), ep("hello", "add_hello"), ep("list", "add_hello")
    )
    caplog.set_level(logging.WARNING)
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert "hello" not in commands  # blocked
    assert "plugin bug" in caplog.text and "'bad'" in caplog.text
    assert cli.main(["plugins", "--json"]) == 0  # built-in commands still work
    capsys.readouterr()


def test_progress_events_are_printed_as_lines_off_a_terminal():
    out = io.StringIO()
    progress = Progress(out, tty=False)
    progress.on_event(KernelEvent("starting", "k1", "docker/x"))  # a quick start says nothing
    progress.on_event(KernelEvent("progress", "k1", "docker/x", {"message": "pulling image x"}))
    progress.on_event(KernelEvent("ready", "k1", "docker/x"))
    progress.close()
    assert out.getvalue() == "kernel-hub: pulling image x\n"


def test_progress_on_a_terminal_redraws_one_line_and_erases_it():
    out = io.StringIO()
    progress = Progress(out, tty=True)
    progress.on_event(KernelEvent("starting", "k1", "docker/x"))
    progress.on_event(KernelEvent("progress", "k1", "docker/x", {"message": "pulling image x"}))
    assert "pulling image x" in repr(progress)
    progress.close()
    progress.on_event(KernelEvent("progress", "k1", "docker/x", {"message": "late"}))
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 3  # two frames, then the erase
    assert "starting kernel docker/x (0 s)" in text and "pulling image x (0 s)" in text
    assert "\n" not in text and "late" not in text and text.endswith("\r\x1b[2K")
