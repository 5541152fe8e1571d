"""Find the entry points of one group without importing :mod:`importlib.metadata`.

:func:`importlib.metadata.entry_points` is correct but heavy for a host that
only wants to launch kernels: importing it pulls in ``email``, ``zipfile``,
``csv``, ``pathlib``, ``tempfile`` and more (≈2.6 MB of RSS, a third of
kernel_hub's own import cost), and each call parses every installed
distribution's metadata. The common case is simple, though: directories on
:data:`sys.path` holding ``*.dist-info`` (or legacy ``*.egg-info``) folders
with an ``entry_points.txt``. This module reads exactly that, with the same
rules as :mod:`importlib.metadata`:

- distributions are searched along ``sys.path`` in order, and the first one
  with a given normalised name wins (later, shadowed copies are ignored, even
  when the first has no ``entry_points.txt``);
- ``entry_points.txt`` is INI-like: ``[group]`` sections, ``name = value``
  lines, ``#`` comments;
- a distribution's name and version are those of its ``METADATA`` (or
  ``PKG-INFO``) headers, read only for distributions that have entry points
  in the group asked for.

What it cannot read — a zip file or ``.egg`` on ``sys.path``, a directory it
may not list, a meta-path finder of another kind that provides distributions
— makes it hand the whole question to :mod:`importlib.metadata`, so the answer
stays correct. A malformed line in an ``entry_points.txt`` is logged (naming
the file) and skipped instead of failing every plugin.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Annotations only: the fallback in entry_points() imports it when it is really needed,
    # which is the point of this module (ruff cannot tell `importlib.metadata` in an
    # annotation from a use, because `importlib` itself is imported at run time).
    import importlib.metadata  # noqa: TC004

__all__ = ["Distribution", "EntryPoint", "entry_points", "normalize_name"]

log = logging.getLogger("kernel_hub.plugins")

_INFO_SUFFIXES = (".dist-info", ".egg-info")


class _Unsupported(Exception):
    """A ``sys.path`` layout this module does not read; :mod:`importlib.metadata` does."""


def normalize_name(name: str) -> str:
    """Return *name* normalised as :mod:`importlib.metadata` compares distributions.

    PEP 503 normalisation with ``_`` for ``-``: ``Kernel.Hub-spec`` → ``kernel_hub_spec``.
    """
    out: list[str] = []
    for ch in name.lower():
        if ch in "-_.":
            if not out or out[-1] != "_":
                out.append("_")
        else:
            out.append(ch)
    return "".join(out)


class Distribution:
    """One installed distribution: its metadata folder, name and version.

    The name and version come from the folder's ``METADATA`` (``PKG-INFO`` for
    egg-info) headers, read on first use; the folder name is the fallback.
    """

    def __init__(self, path: str) -> None:
        #: the ``*.dist-info`` or ``*.egg-info`` folder
        self.path = path

    def __repr__(self) -> str:
        return f"<Distribution {self.name} {self.version} [{self.path}]>"

    @functools.cached_property
    def _headers(self) -> dict[str, str]:
        stem = os.path.basename(self.path).rpartition(".")[0]
        name, _, version = stem.partition("-")
        # A wheel's folder is "{name}-{version}.dist-info"; an egg-info's may lack the version.
        fallback = {"name": name, "version": version.partition("-")[0]}
        headers: dict[str, str] = {}
        for filename in ("METADATA", "PKG-INFO"):
            try:
                with open(os.path.join(self.path, filename), encoding="utf-8") as f:
                    for line in f:
                        if not line.strip():
                            break  # the end of the headers: the body is the description
                        key, sep, value = line.partition(":")
                        if sep and key.lower() in fallback:
                            headers.setdefault(key.lower(), value.strip())  # the first wins
            except (OSError, UnicodeDecodeError):
                continue
            break
        return fallback | headers

    @property
    def name(self) -> str:
        """The distribution's name as its metadata spells it (``kernel-hub-spec``)."""
        return self._headers["name"]

    @property
    def version(self) -> str:
        """The distribution's version, or ``""`` if its metadata has none."""
        return self._headers["version"]


class EntryPoint:
    """One entry point: ``name = value`` in ``[group]``, with the distribution declaring it.

    It offers the part of :class:`importlib.metadata.EntryPoint` that kernel_hub
    uses: ``name``, ``value``, ``group``, ``dist``, ``module``, ``attr`` and
    :meth:`load`.
    """

    __slots__ = ("dist", "group", "name", "value")

    def __init__(
        self, name: str, value: str, group: str, *, dist: Distribution | None = None
    ) -> None:
        self.name = name
        self.value = value
        self.group = group
        self.dist = dist

    def __repr__(self) -> str:
        return f"EntryPoint(name={self.name!r}, value={self.value!r}, group={self.group!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntryPoint):
            return NotImplemented
        return (self.name, self.value, self.group) == (other.name, other.value, other.group)

    def __hash__(self) -> int:
        return hash((self.name, self.value, self.group))

    @property
    def module(self) -> str:
        """The module part of the value: ``pkg.mod`` of ``pkg.mod:obj.attr [extra]``."""
        return self.value.partition("[")[0].partition(":")[0].strip()

    @property
    def attr(self) -> str:
        """The attribute path after the colon, or ``""`` for a module entry point."""
        return self.value.partition("[")[0].partition(":")[2].strip()

    def load(self) -> Any:
        """Import the module and return the object the entry point names."""
        obj: Any = importlib.import_module(self.module)
        for part in filter(None, self.attr.split(".")):
            obj = getattr(obj, part)
        return obj


def _parse(text: str, group: str, *, source: str, dist: Distribution) -> list[EntryPoint]:
    """Return the entry points of *group* in the ``entry_points.txt`` text *text*."""
    found: list[EntryPoint] = []
    section: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
            continue
        if section != group:
            continue  # other groups' lines are not ours to judge
        name, sep, value = line.partition("=")
        if not sep or not name.strip() or not value.strip():
            log.warning(
                "%s, line %d: %r is not 'name = module:attr'; entry point skipped. "
                "Reinstall the distribution that owns this file.",
                source,
                number,
                line,
            )
            continue
        found.append(EntryPoint(name.strip(), value.strip(), group, dist=dist))
    return found


def _info_dirs(entry: str) -> list[tuple[str, str]]:
    """Return ``(normalised name, folder)`` of every metadata folder in a ``sys.path`` entry.

    :raises _Unsupported: for a zip file, an egg, or a directory that cannot be listed.
    """
    root = entry or "."
    if os.path.basename(root).lower().endswith(".egg"):
        raise _Unsupported(f"{entry!r} is an egg")
    try:
        children = os.listdir(root)
    except FileNotFoundError:
        return []  # a sys.path entry that does not exist holds nothing
    except NotADirectoryError:
        raise _Unsupported(f"{entry!r} is a file (a zip archive?)") from None
    except OSError as exc:
        raise _Unsupported(f"cannot list {entry!r}: {exc}") from None
    found = []
    for child in children:
        low = child.lower()
        if low.endswith(_INFO_SUFFIXES):
            # As importlib.metadata: the name is what precedes the first "-".
            name = low.rpartition(".")[0].partition("-")[0]
            found.append((normalize_name(name), os.path.join(root, child)))
    return found


def _other_distribution_finders() -> bool:
    """Return True if a meta-path finder besides the standard one can provide distributions."""
    from importlib.machinery import PathFinder

    return any(
        finder is not PathFinder and getattr(finder, "find_distributions", None) is not None
        for finder in sys.meta_path
    )


def _scan(group: str) -> list[EntryPoint]:
    if _other_distribution_finders():
        raise _Unsupported("a meta-path finder provides distributions of its own")
    seen: set[str] = set()
    found: list[EntryPoint] = []
    for entry in list(sys.path):
        if not isinstance(entry, str):
            raise _Unsupported(f"sys.path entry {entry!r} is not a str")
        for normalized, folder in _info_dirs(entry):
            if normalized in seen:
                continue  # shadowed by a distribution earlier on sys.path
            seen.add(normalized)
            source = os.path.join(folder, "entry_points.txt")
            try:
                with open(source, encoding="utf-8") as f:
                    text = f.read()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue  # no entry points (or an old single-file egg-info)
            except (OSError, UnicodeDecodeError) as exc:
                log.warning("cannot read %s (%s); its entry points are skipped", source, exc)
                continue
            if group in text:  # a cheap pre-check: most files declare only other groups
                found.extend(_parse(text, group, source=source, dist=Distribution(folder)))
    return found


def entry_points(group: str) -> list[EntryPoint] | list[importlib.metadata.EntryPoint]:
    """Return the entry points of *group* of the distributions on :data:`sys.path`.

    The same entry points as ``importlib.metadata.entry_points(group=group)``,
    found without importing :mod:`importlib.metadata` when ``sys.path`` holds
    only directories; otherwise that module answers.

    :param group: the entry-point group, e.g. ``"kernel_hub"``.
    """
    try:
        return _scan(group)
    except _Unsupported as exc:
        log.debug("entry points of %r: %s; asking importlib.metadata", group, exc)
    import importlib.metadata

    return list(importlib.metadata.entry_points(group=group))
