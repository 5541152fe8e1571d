"""The declared config schema (``kernel_hub.provider.ConfigSchema``): pure logic, no plugin.

One mechanism for every plugin (issue 22, item 1): fields, types, defaults and
a doc line each; a bad kernel-type table drops only itself, a bad setting keeps
its default, each as one line naming the file, the table, the field and the fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from kernel_hub.provider import (
    ConfigError,
    ConfigSchema,
    KernelType,
    NoSuchKernelType,
    positive,
    setting,
    table_name,
)


@dataclass(frozen=True)
class Settings:
    ping_timeout: float = setting(3.0, "seconds before the engine counts as down", check=positive)
    discover: bool = setting(True, "offer labelled images")


def no_spaces(value: str) -> str:
    if " " in value:
        raise ValueError(f"{value!r} has a space; give one word")
    return value


@dataclass(frozen=True)
class Table:
    name: str = table_name()
    host: str = setting(doc="a host name or ~/.ssh/config alias")
    port: int | None = setting(None, "the SSH port")
    timeout: float = setting(10.0, "seconds", check=positive)
    args: tuple[str, ...] = setting((), "extra arguments")
    env: dict[str, str] = setting({}, "extra environment")
    mode: Literal["signal", "message"] = setting("signal", "how to interrupt")
    memory: str | int | None = setting(None, "a size")
    word: str = setting("w", "one word", check=no_spaces)
    extra: Any = setting(None, "anything")


SCHEMA = ConfigSchema("demo", settings=Settings, types=Table)
FILE = "/home/me/.config/kernel-hub/config.toml"


def test_good_tables_are_instances_with_defaults_and_coerced_values():
    parsed = SCHEMA.parse(
        {
            "ping_timeout": 2,
            "Box": {"host": "h", "timeout": 3, "args": ["-v"], "env": {"A": "1"}, "memory": 5},
        }
    )
    assert parsed.problems == ()
    assert parsed.settings == Settings(ping_timeout=2)  # an int is a float, kept as written
    box = parsed.types["box"]  # the name is normalised, as the kernel type's
    assert box == Table(name="box", host="h", timeout=3.0, args=("-v",), env={"A": "1"}, memory=5)
    assert SCHEMA.parse({}).settings == Settings()


def test_a_bad_table_drops_only_itself_in_one_line_naming_file_table_field_and_fix():
    parsed = SCHEMA.parse({"good": {"host": "h"}, "bad": {"hots": "h"}}, file=FILE)
    assert list(parsed.types) == ["good"]
    (problem,) = parsed.problems
    assert problem.table == "demo.bad"
    assert problem.message.startswith(f"kernel_hub config {FILE}: [demo.bad] has unknown field(s)")
    assert "'hots'" in problem.message and problem.message.endswith("did you mean 'host'?")
    assert str(problem).endswith("? The demo/bad kernel type is left out until this is fixed")
    assert "\n" not in str(problem)
    assert parsed.rejected == {"bad": problem.message}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"host": 1}, "[demo.k] field 'host' must be a string, not int 1"),
        ({"host": "h", "port": "22"}, "field 'port' must be an integer, not str '22'"),
        ({"host": "h", "port": True}, "field 'port' must be an integer, not bool True"),
        ({"host": "h", "timeout": "2h"}, "field 'timeout' must be a number, not str '2h'"),
        ({"host": "h", "timeout": 0}, "field 'timeout' must be positive, not 0"),
        ({"host": "h", "args": "-v"}, "field 'args' must be a list of strings, not str '-v'"),
        ({"host": "h", "args": [1]}, "field 'args' must be a list of strings, not list [1]"),
        ({"host": "h", "env": {"A": 1}}, "field 'env' values must be strings (see 'A')"),
        ({"host": "h", "mode": "poke"}, "field 'mode' must be one of 'signal', 'message', not"),
        ({"host": "h", "memory": 1.5}, "field 'memory' must be a string or an integer, not"),
        ({"host": "h", "word": "a b"}, "field 'word' 'a b' has a space; give one word"),
        ({}, "[demo.k] needs 'host': a host name or ~/.ssh/config alias"),
    ],
)
def test_each_kind_of_mistake_is_one_clear_line(table, message):
    parsed = SCHEMA.parse({"k": table})
    assert parsed.types == {}
    (problem,) = parsed.problems
    assert message in problem.message
    assert "\n" not in problem.message and "Error(" not in problem.message


def test_without_settings_a_scalar_is_a_table_that_is_not_one():
    (problem,) = ConfigSchema("demo", types=Table).parse({"k": "h"}).problems
    assert problem.message == (
        "kernel_hub config [demo.k] must be a table (one per demo kernel type), not str 'h'"
    )


def test_a_bad_setting_keeps_its_default_and_the_types():
    parsed = SCHEMA.parse({"ping_timeout": "x", "discover": False, "t": {"host": "h"}}, file=FILE)
    assert parsed.settings == Settings(ping_timeout=3.0, discover=False)
    assert list(parsed.types) == ["t"]
    (problem,) = parsed.problems
    assert problem.table == "demo"
    assert str(problem) == (
        f"kernel_hub config {FILE}: [demo] field 'ping_timeout' must be a number, not str 'x'. "
        "Its default 3.0 is used until this is fixed"
    )


def test_an_unknown_setting_is_named_with_a_did_you_mean_and_ignored():
    parsed = SCHEMA.parse({"pign_timeout": 2, "t": {"host": "h"}})
    assert parsed.settings == Settings() and list(parsed.types) == ["t"]
    (problem,) = parsed.problems
    assert problem.message == (
        "kernel_hub config [demo] has unknown setting(s) 'pign_timeout'; known settings: "
        "discover, ping_timeout (kernel types go in [demo.<name>] tables); "
        "did you mean 'ping_timeout'?"
    )


def test_a_bad_table_name_is_one_line():
    (problem,) = SCHEMA.parse({"no way": {"host": "h"}}).problems
    assert problem.message.startswith("kernel_hub config [demo.no way]: ")


def test_parse_table_serves_other_sources_with_their_own_name():
    with pytest.raises(ConfigError, match=r"^launch params field 'timeout' must be a number"):
        SCHEMA.parse_table({"host": "h", "timeout": "x"}, name="k", where="launch params")
    assert SCHEMA.parse_table({"host": "h"}, name="k", where="x").name == "k"
    # JSON (an image label, saved metadata) has null: fine where the type allows None
    assert SCHEMA.parse_table({"host": "h", "port": None}, name="k", where="x").port is None
    with pytest.raises(ConfigError, match="field 'host' must be a string, not NoneType None"):
        SCHEMA.parse_table({"host": None}, name="k", where="x")


def test_check_gives_values_sources_docs_and_errors():
    section = {"ping_timeout": 2, "t": {"host": "h"}, "bad": {"host": "h", "port": "x"}}
    checks = {c.table: c for c in SCHEMA.check(section, file=FILE)}
    assert list(checks) == ["demo", "demo.t", "demo.bad"]
    assert checks["demo"].values["ping_timeout"] == (2, "config")
    assert checks["demo"].values["discover"] == (True, "default")
    assert checks["demo"].docs["ping_timeout"] == "seconds before the engine counts as down"
    assert checks["demo.t"].error is None
    assert checks["demo.t"].values["host"] == ("h", "config")
    assert checks["demo.t"].values["timeout"] == (10.0, "default")
    assert "name" not in checks["demo.t"].values
    assert checks["demo.bad"].error is not None and "field 'port'" in checks["demo.bad"].error
    bad_setting = {c.table: c for c in SCHEMA.check({"ping_timeout": "x"})}["demo"]
    assert bad_setting.values["ping_timeout"] == (3.0, "default")
    assert bad_setting.error is not None and "'ping_timeout'" in bad_setting.error


class Hub:
    """The part of a hub a schema reads."""

    def __init__(self, section: dict[str, Any]) -> None:
        self.section = section
        self.config_file = FILE

    def config_for(self, plugin: str) -> dict[str, Any]:
        return dict(self.section) if plugin == "demo" else {}


def test_load_warns_once_per_problem(caplog):
    hub = Hub({"ok": {"host": "h"}, "once-only": {"host": "h", "prot": 1}})
    with caplog.at_level(logging.WARNING, logger="kernel_hub.demo"):
        for _ in range(3):
            assert list(SCHEMA.load(hub).types) == ["ok"]
    (record,) = caplog.records
    assert "[demo.once-only]" in record.getMessage() and FILE in record.getMessage()


def test_type_config_is_the_launch_lookup():
    hub = Hub({"ok": {"host": "h"}, "bad": {"host": "h", "port": "x"}})
    assert SCHEMA.type_config(hub, KernelType(provider="demo", name="ok")).host == "h"
    with pytest.raises(ConfigError, match=r"\[demo.bad\] field 'port' must be an integer"):
        SCHEMA.type_config(hub, KernelType(provider="demo", name="bad"))
    with pytest.raises(NoSuchKernelType, match="demo/gone"):
        SCHEMA.type_config(hub, KernelType(provider="demo", name="gone"))


def test_a_schema_without_types_reports_tables_as_unknown_settings():
    only = ConfigSchema("solo", settings=Settings)
    (problem,) = only.parse({"sub": {"a": 1}}).problems
    assert "unknown setting(s) 'sub'" in problem.message and "<name>" not in problem.message


def test_a_schema_is_checked_at_first_use_not_at_import():
    @dataclass(frozen=True)
    class NoDefault:
        x: int = setting(doc="no default")

    no_default = ConfigSchema("p", settings=NoDefault)  # nothing resolved yet: pay at use
    with pytest.raises(TypeError, match="plugin settings need defaults: x"):
        no_default.parse({})
    with pytest.raises(TypeError, match="must be a dataclass"):
        ConfigSchema("p", types=dict).parse({"t": {}})


def test_every_field_of_the_installed_plugins_schemas_has_a_doc_line():
    from kernel_hub.plugins import make_plugin_manager
    from kernel_hub.plugins.schema import SCHEMA_ATTRIBUTE

    schemas = [
        s
        for _, plugin in make_plugin_manager().list_name_plugin()
        if isinstance(s := getattr(plugin, SCHEMA_ATTRIBUTE, None), ConfigSchema)
    ]
    assert {s.plugin for s in schemas} >= {"ssh", "slurm", "docker", "nice"}
    from kernel_hub.plugins.schema import _fields_of

    for schema in schemas:
        for cls in (schema.settings, schema.types):
            if cls is not None:
                fields = _fields_of(cls)[0]
                undocumented = [k for k, f in fields.items() if not f.doc]
                assert fields and not undocumented, f"{cls.__name__}: no doc line: {undocumented}"
