"""Declared config schemas: how a plugin says what its tables of the config file hold.

A plugin declares its tables as plain dataclasses, one field per setting, with
:func:`setting` giving each its default, a doc line and an optional check; the
type hints are the types. A :class:`ConfigSchema` names the plugin's table and
its two kinds of content: plugin-level settings (scalars of ``[docker]``, e.g.
``ping_timeout``) and one sub-table per kernel type (``[docker.py311]``).

.. code-block:: python

    @dataclass(frozen=True)
    class NiceSettings:
        niceness: int = setting(10, "the nice level, 0..19", check=between(0, 19))

    SCHEMA = ConfigSchema("nice", settings=NiceSettings)

The schema does the rest, the same way for every plugin: a bad kernel-type
table leaves out only that type and a bad setting falls back to its default,
each with one warning line naming the file, the table, the field and the fix
(with a did-you-mean for a misspelt field); ``kernel-hub config check`` reports
the same lines and every effective value. The core finds a plugin's schema as
the attribute ``config_schema`` of the plugin object (:data:`SCHEMA_ATTRIBUTE`).

Only the standard library: dataclasses and type hints (``str``, ``int``,
``float``, ``bool``, ``X | None``, ``A | B``, ``Literal[...]``,
``tuple[X, ...]``, ``list[X]``, ``dict[str, X]`` / ``Mapping[str, X]``, ``Any``).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

from ..contract.errors import ConfigError, NoSuchKernelType
from ..contract.types import split_type_id
from .config import ConfigCheck

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from os import PathLike

    from ..contract.hookspecs import HubContext
    from ..contract.types import KernelType

__all__ = [
    "SCHEMA_ATTRIBUTE",
    "ConfigProblem",
    "ConfigSchema",
    "ParsedConfig",
    "between",
    "kernel_argv",
    "positive",
    "protocol_version",
    "setting",
    "table_name",
]

#: The attribute of a plugin object (its ``plugin`` module) that holds its :class:`ConfigSchema`.
SCHEMA_ATTRIBUTE = "config_schema"

_DOC = "kernel_hub.doc"
_CHECK = "kernel_hub.check"
_NAME = "kernel_hub.table_name"

# Names a schema's annotations may use without importing them at run time (ruff's TC rule
# moves annotation-only imports under TYPE_CHECKING; dataclass annotations are strings).
_HINT_NAMES: dict[str, Any] = {
    "Any": Any,
    "Literal": Literal,
    "Mapping": collections.abc.Mapping,
    "Sequence": collections.abc.Sequence,
}


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    check: Callable[[Any], Any] | None = None,
) -> Any:
    """Declare one field of a config table (a :func:`dataclasses.field`).

    :param default: the value when the table does not set it; leave it out for a
        required field (kernel-type tables only). A list or dict default is
        copied for each table.
    :param doc: one line saying what the field is; ``config check`` prints it and a
        missing required field's error quotes it.
    :param check: called with the value once its type is right (not with ``None``,
        which JSON sources may give an ``X | None`` field); returns the value
        to keep (it may normalise it) or raises :class:`ValueError` whose message
        continues the sentence "``[table] field 'name'`` ...", e.g.
        ``"must be positive, not 0"``.
    """
    meta = {_DOC: doc, _CHECK: check}
    if isinstance(default, list | dict):
        copy = default.copy
        return field(default_factory=copy, metadata=meta, hash=False)
    return field(default=default, metadata=meta)


def table_name() -> Any:
    """Declare the field that receives the kernel-type table's name (normalised), not a key.

    Keyword-only, so that required fields may follow it.
    """
    return field(default="", kw_only=True, metadata={_NAME: True})


def positive(value: float) -> float:
    """A :func:`setting` check: the number must be above zero."""
    if value <= 0:
        raise ValueError(f"must be positive, not {value!r}")
    return value


def between(low: int, high: int) -> Callable[[int], int]:
    """Return a :func:`setting` check that keeps a number within ``low..high``."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, not {value!r}")
        return value

    return check


_VERSION_RE = re.compile(r"^\d+(\.\d+)*$")


def kernel_argv(value: tuple[str, ...]) -> tuple[str, ...]:
    """A :func:`setting` check: a kernel's command line (empty: the plugin's default)
    must name ``{connection_file}``, where the kernel reads its connection file."""
    if value and not any("{connection_file}" in arg for arg in value):
        raise ValueError(
            "must contain '{connection_file}', where the kernel is to read its connection file, "
            'e.g. ["xpython", "-f", "{connection_file}"]'
        )
    return value


def protocol_version(value: str) -> str:
    """A :func:`setting` check: a ``kernel_protocol_version`` written as in a kernelspec."""
    if not _VERSION_RE.match(value):
        raise ValueError(
            f'{value!r} is not a protocol version; write it as in a kernelspec, e.g. "5.6"'
        )
    return value


def argv_setting() -> Any:
    """Declare an ``argv`` field as a kernelspec has it: the kernel's command line, which
    names ``{connection_file}`` (:func:`kernel_argv`); empty, the plugin's default."""
    doc = "the kernel's argv with {connection_file}; default ipykernel on python"
    return setting((), doc, check=kernel_argv)


def protocol_version_setting() -> Any:
    """Declare a ``kernel_protocol_version`` field as a kernelspec has it, checked by
    :func:`protocol_version`: ``"5.6"`` or later starts the kernel with the registration
    handshake (JEP 66)."""
    doc = "as in a kernelspec: 5.6 or later starts the kernel with the registration handshake"
    return setting(None, doc, check=protocol_version)


# ---- types ----


class _Invalid(ValueError):
    """A value of the wrong type; the message continues "field 'x' ..."."""


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


_PHRASES: dict[Any, tuple[str, str]] = {
    str: ("a string", "strings"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "booleans"),
}


def _phrase(hint: Any, *, plural: bool = False) -> str:
    """Say what *hint* accepts, in words: ``a list of strings``, ``a number``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in _PHRASES:
        return _PHRASES[hint][plural]
    if origin in (Union, types.UnionType):
        return " or ".join(_phrase(a, plural=plural) for a in args if a is not type(None))
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (tuple, list, collections.abc.Sequence):
        return ("lists" if plural else "a list") + f" of {_phrase(args[0], plural=True)}"
    if origin in (dict, collections.abc.Mapping):
        return ("tables" if plural else "a table") + f" of {_phrase(args[1], plural=True)}"
    return "values" if plural else "a value"


def _coerce(value: Any, hint: Any) -> Any:
    """Return *value* as *hint* wants it (a TOML array becomes a tuple for a tuple field).

    :raises _Invalid: saying what was expected and what was given.
    """
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:  # not from TOML: JSON labels, saved metadata
            return None
        for member in args:
            if member is not type(None):
                try:
                    return _coerce(value, member)
                except _Invalid:
                    pass
    elif origin is Literal:
        # type(): TOML's true must not pass for a Literal[1]
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _Invalid(f"must be {_phrase(hint)}, not {value!r}")
    elif origin in (tuple, list, collections.abc.Sequence):
        if isinstance(value, list | tuple):
            try:
                items = [_coerce(v, args[0] if args else Any) for v in value]
            except _Invalid:
                pass
            else:
                return list(items) if origin is list else tuple(items)
    elif origin in (dict, collections.abc.Mapping):
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                try:
                    out[key] = _coerce(item, args[1] if args else Any)
                except _Invalid:
                    raise _Invalid(
                        f"values must be {_phrase(args[1], plural=True)} (see {key!r})"
                    ) from None
            return out
    elif hint is float:  # an int is a float (the numeric tower): kept as written
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):  # true is no port number
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _Invalid(f"must be {_phrase(hint)}, not {_show(value)}")


@dataclass(frozen=True)
class _Field:
    name: str
    hint: Any
    doc: str
    check: Callable[[Any], Any] | None
    default: Any  # dataclasses.MISSING when required

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


_fields_cache: dict[type, tuple[dict[str, _Field], str | None]] = {}


def _fields_of(cls: type) -> tuple[dict[str, _Field], str | None]:
    """Return ``({key: field}, name of the table-name field)`` of a schema dataclass."""
    if cls in _fields_cache:
        return _fields_cache[cls]
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"a config schema must be a dataclass, not {cls!r}")
    hints = typing.get_type_hints(cls, localns=_HINT_NAMES)
    out: dict[str, _Field] = {}
    name_field = None
    for f in dataclasses.fields(cls):
        if f.metadata.get(_NAME):
            name_field = f.name
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        out[f.name] = _Field(
            f.name, hints[f.name], f.metadata.get(_DOC, ""), f.metadata.get(_CHECK), default
        )
    _fields_cache[cls] = (out, name_field)
    return out, name_field


def _did_you_mean(unknown: list[str], known: collections.abc.Iterable[str]) -> str:
    import difflib  # only for a typo

    close = []
    for key in unknown:
        match = difflib.get_close_matches(key, list(known), n=1)
        if match:
            close.append(f"{match[0]!r}" + (f" (for {key!r})" if len(unknown) > 1 else ""))
    return f"; did you mean {', '.join(close)}?" if close else ""


def _field_value(f: _Field, value: Any) -> Any:
    value = _coerce(value, f.hint)
    # None is "not set" (only JSON has it): nothing to check
    return f.check(value) if f.check is not None and value is not None else value


def _first_line(text: str) -> str:
    return " ".join(text.split())


# ---- results ----


@dataclass(frozen=True)
class ConfigProblem:
    """One rejected table or setting: what is wrong and what happens meanwhile.

    :param table: the table's dotted name, ``"slurm.gpu"`` or ``"docker"``.
    :param message: one line naming the file, the table, the field and the fix.
    :param consequence: what the plugin does meanwhile ("the slurm/gpu kernel type
        is left out until this is fixed").
    """

    table: str
    message: str
    consequence: str

    def __str__(self) -> str:
        end = " " if self.message.endswith(("?", ".")) else ". "
        return f"{self.message}{end}{self.consequence[:1].upper()}{self.consequence[1:]}"


@dataclass(frozen=True)
class ParsedConfig:
    """What a :class:`ConfigSchema` made of one plugin's part of the config file.

    :param settings: the plugin-level settings (an instance of the schema's
        ``settings`` class, defaults where the file is silent or wrong), or ``None``.
    :param types: normalised kernel-type name -> instance of the schema's ``types``
        class, for every good table.
    :param problems: one per rejected table or setting, in file order.
    """

    settings: Any
    types: dict[str, Any]
    problems: tuple[ConfigProblem, ...] = ()
    #: normalised (or raw) table name -> the one-line error of a rejected type table
    rejected: dict[str, str] = field(default_factory=dict)


_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class ConfigSchema:
    """The declared shape of one plugin's table of the config file.

    :param plugin: the table's name, the plugin's name and provider id (``"docker"``).
    :param settings: a dataclass of plugin-level settings (``[docker] ping_timeout``);
        each field needs a default.
    :param types: a dataclass of one kernel-type table (``[docker.<name>]``); a
        :func:`table_name` field receives the table's name.
    :param type_ids: the sub-tables are named by whole kernel type ids of any
        provider (``[culling."ssh/gpu-box"]``, a core table), not by type names of
        this plugin; a sub-table that is rejected is then only left out.

    A plugin exposes it as ``config_schema`` on its plugin module
    (``from .config import SCHEMA as config_schema``), and reads its config
    through :meth:`load` and :meth:`type_config` in its hooks.
    """

    plugin: str
    settings: type | None = None
    types: type | None = None
    type_ids: bool = False

    def _table_key(self, key: Any) -> str:
        """Return the normalised name of sub-table *key* (:raises ValueError: a bad name)."""
        if self.type_ids:
            return "/".join(split_type_id(str(key)))
        return split_type_id(f"{self.plugin}/{key}")[1]

    def _settings_fields(self) -> dict[str, _Field]:
        # Resolved at first use, not at import (pay at use): a plugin's schema costs
        # nothing to a command that reads no config.
        if self.settings is None:
            return {}
        known = _fields_of(self.settings)[0]
        required = [f.name for f in known.values() if f.required]
        if required:
            raise TypeError(f"plugin settings need defaults: {', '.join(required)}")
        return known

    # ---- pure parsing ----

    def where(self, name: str | None = None, *, file: str | PathLike[str] | None = None) -> str:
        """Return how messages name the table: ``kernel_hub config /p/config.toml: [ssh.box]``."""
        if name is None:
            table = f"[{self.plugin}]"
        else:
            table = f'[{self.plugin}."{name}"]' if self.type_ids else f"[{self.plugin}.{name}]"
        return f"kernel_hub config {file}: {table}" if file else f"kernel_hub config {table}"

    def parse_table(self, data: Any, *, name: str, where: str) -> Any:
        """Return one kernel-type table as the ``types`` class, all fields checked.

        Also for data that is not in the file but has the same shape (an image
        label, a launch's params over a table's values).

        :param where: names the table in messages (:meth:`where`, ``"launch params"``).
        :raises ConfigError: one line naming *where*, the field and the fix.
        """
        if self.types is None:
            raise ConfigError(f"{where}: the {self.plugin} plugin has no kernel-type tables")
        if not isinstance(data, collections.abc.Mapping):
            raise ConfigError(
                f"{where} must be a table (one per {self.plugin} kernel type), not {_show(data)}"
            )
        fields, name_field = _fields_of(self.types)
        unknown = sorted(str(k) for k in data if k not in fields)
        if unknown:
            raise ConfigError(
                f"{where} has unknown field(s) {', '.join(map(repr, unknown))}; known fields: "
                f"{', '.join(sorted(fields))}{_did_you_mean(unknown, fields)}"
            )
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            try:
                kwargs[key] = _field_value(fields[key], value)
            except ValueError as exc:
                raise ConfigError(f"{where} field {key!r} {_first_line(str(exc))}") from None
        for f in fields.values():
            if f.required and f.name not in kwargs:
                raise ConfigError(f"{where} needs {f.name!r}: {f.doc or 'it has no default'}")
        if name_field is not None:
            kwargs[name_field] = name
        try:
            return self.types(**kwargs)
        except ValueError as exc:  # the class's own __post_init__ check
            raise ConfigError(f"{where}: {_first_line(str(exc))}") from None

    def parse(
        self, section: Mapping[str, Any], *, file: str | PathLike[str] | None = None
    ) -> ParsedConfig:
        """Parse the plugin's table: settings, good kernel-type tables, and problems.

        Pure: logs nothing. A bad kernel-type table is left out; a bad setting
        keeps its default; an unknown setting is ignored. Each is one
        :class:`ConfigProblem`.

        :param file: the config file, named in messages (``None``: a mapping a host gave).
        """
        known = self._settings_fields()
        settings: dict[str, Any] = {}
        found: dict[str, Any] = {}
        rejected: dict[str, str] = {}
        problems: list[ConfigProblem] = []
        unknown: list[str] = []
        for key, value in section.items():
            if key in known:
                try:
                    settings[key] = _field_value(known[key], value)
                except ValueError as exc:
                    default = _json_default(known[key].default)
                    problems.append(
                        ConfigProblem(
                            self.plugin,
                            f"{self.where(file=file)} field {key!r} {_first_line(str(exc))}",
                            f"its default {default} is used until this is fixed",
                        )
                    )
                continue
            is_table = isinstance(value, collections.abc.Mapping)
            if self.types is None or (self.settings is not None and not is_table):
                unknown.append(str(key))
                continue
            try:
                name = self._table_key(key)
            except ValueError as exc:
                name = str(key)
                message = f"{self.where(str(key), file=file)}: {_first_line(str(exc))}"
            else:
                try:
                    found[name] = self.parse_table(
                        value, name=name, where=self.where(str(key), file=file)
                    )
                    continue
                except ConfigError as exc:
                    message = str(exc)
            rejected[name] = message
            left_out = (
                f"the table is left out until this is fixed ([{self.plugin}] applies to {name})"
                if self.type_ids
                else f"the {self.plugin}/{name} kernel type is left out until this is fixed"
            )
            problems.append(ConfigProblem(f"{self.plugin}.{key}", message, left_out))
        if unknown:
            what = f"known settings: {', '.join(sorted(known))}" if known else "it has none"
            tables = f" (kernel types go in [{self.plugin}.<name>] tables)" if self.types else ""
            problems.append(
                ConfigProblem(
                    self.plugin,
                    f"{self.where(file=file)} has unknown setting(s) "
                    f"{', '.join(map(repr, unknown))}; {what}{tables}"
                    + _did_you_mean(unknown, known),
                    "it is ignored",
                )
            )
        obj = self.settings(**settings) if self.settings is not None else None
        return ParsedConfig(obj, found, tuple(problems), rejected)

    def check(
        self, section: Mapping[str, Any], *, file: str | PathLike[str] | None = None
    ) -> list[ConfigCheck]:
        """Return one :class:`ConfigCheck` per table: effective values, sources, docs, errors.

        What ``kernel-hub config check`` prints for this plugin.
        """
        parsed = self.parse(section, file=file)
        errors: dict[str, list[str]] = {}
        for p in parsed.problems:
            errors.setdefault(p.table, []).append(p.message)
        checks = []
        if self.settings is not None or self.plugin in errors:
            known = self._settings_fields()
            bad = {k for k in known for m in errors.get(self.plugin, []) if f"field {k!r}" in m}
            values = {
                k: (
                    getattr(parsed.settings, k),
                    "config" if k in section and k not in bad else "default",
                )
                for k in known
            }
            docs = {k: f.doc for k, f in known.items()}
            error = " | ".join(errors.get(self.plugin, [])) or None
            checks.append(ConfigCheck(self.plugin, values, error, docs))
        if self.types is None:
            return checks
        fields, _ = _fields_of(self.types)
        for key, table in section.items():
            dotted = f"{self.plugin}.{key}"
            if dotted in errors:
                checks.append(ConfigCheck(dotted, error=" | ".join(errors[dotted])))
                continue
            try:
                obj = parsed.types[self._table_key(key)]
            except (ValueError, KeyError):
                continue  # a plugin-level setting: shown above
            values = {k: (getattr(obj, k), "config" if k in table else "default") for k in fields}
            checks.append(ConfigCheck(dotted, values, None, {k: f.doc for k, f in fields.items()}))
        return checks

    # ---- in hooks ----

    def load(self, hub: HubContext) -> ParsedConfig:
        """Parse this plugin's part of *hub*'s config; log each problem once per process.

        The call for ``find_kernel_types`` and any hook that needs the settings:
        ``SCHEMA.load(hub).types`` are the good kernel-type tables.
        """
        # A minimal hub (a test's stand-in) may not say where its config came from.
        file = getattr(hub, "config_file", None)
        parsed = self.parse(hub.config_for(self.plugin), file=file)
        log = logging.getLogger(f"kernel_hub.{self.plugin}")
        for problem in parsed.problems:
            line = str(problem)
            if (self.plugin, line) not in _warned:
                _warned.add((self.plugin, line))
                log.warning("%s", line)
        return parsed

    def type_config(self, hub: HubContext, kernel_type: KernelType) -> Any:
        """Return the parsed table of *kernel_type*: the call for ``launch`` and friends.

        :raises ConfigError: the table's one-line error, when it is rejected.
        :raises NoSuchKernelType: when the config has no table for it (any more).
        """
        parsed = self.parse(hub.config_for(self.plugin), file=getattr(hub, "config_file", None))
        if kernel_type.name in parsed.types:
            return parsed.types[kernel_type.name]
        if kernel_type.name in parsed.rejected:
            raise ConfigError(parsed.rejected[kernel_type.name])
        raise NoSuchKernelType(kernel_type.id, [f"{self.plugin}/{n}" for n in parsed.types])


def _json_default(value: Any) -> str:
    """Render a default for a message: ``3.0``, ``true``, ``"python3"``."""
    import json

    return json.dumps(list(value) if isinstance(value, tuple) else value, default=str)
