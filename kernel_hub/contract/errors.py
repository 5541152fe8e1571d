"""The kernel_hub error hierarchy; every message names the thing and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "KernelDied",
    "KernelHubError",
    "LaunchError",
    "NoSuchKernelType",
    "PluginError",
    "StateInUse",
]


class KernelHubError(Exception):
    """Base class of every error kernel_hub raises on purpose."""


class PluginError(KernelHubError):
    """A plugin misbehaved: failed to load, broke the contract, or clashed with another."""


class StateInUse(KernelHubError):
    """Another live hub holds the state dir: two hubs never adopt the same kernels."""


class ConfigError(KernelHubError):
    """The kernel_hub configuration file is malformed."""


class NoSuchKernelType(KernelHubError, LookupError):
    """No installed plugin offers the requested kernel type id."""

    def __init__(
        self, type_id: str, known: Iterable[str] = (), *, unavailable: str | None = None
    ) -> None:
        import difflib

        self.type_id = type_id
        self.known = sorted(known)
        #: Why the plugin that would offer *type_id* cannot here (``UnavailableType.reason``).
        self.unavailable = unavailable
        if unavailable:
            super().__init__(f"kernel type {type_id!r} is not available: {unavailable}")
            return
        close = difflib.get_close_matches(type_id, self.known, n=3, cutoff=0.5)
        msg = f"no kernel type {type_id!r}."
        if close:
            msg += f" Did you mean: {', '.join(close)}?"
        if self.known:
            msg += f" Known types: {', '.join(self.known)}."
        else:
            msg += " No kernel types are known at all."
        msg += (
            " Run 'kernel-hub list' to see them; if the type comes from a plugin,"
            " ensure that plugin (e.g. kernel-hub-ssh) is installed and configured."
        )
        super().__init__(msg)


class LaunchError(KernelHubError):
    """A kernel could not be started; the message says why and what to do.

    :param message: one line: what failed and what to do.
    :param output: the kernel's last output, when it ran (``""`` otherwise).
        ``str(error)`` is *message*, then ``Its last output:`` and the output
        on the lines below; a caller that has room for one line only (the CLI's
        error line, a Jupyter error) shows :attr:`summary` and, if it can,
        :attr:`output` apart.
    """

    def __init__(self, message: str, *, output: str = "") -> None:
        #: The one-line message, without the kernel's output.
        self.summary = message
        #: The kernel's last output (stripped; ``""`` when there is none).
        self.output = output.strip()
        super().__init__(message + (f"\nIts last output:\n{self.output}" if self.output else ""))


class KernelDied(KernelHubError):
    """The kernel process ended while a request was waiting for it."""

    def __init__(self, message: str, *, exit_status: int | None = None) -> None:
        super().__init__(message)
        self.exit_status = exit_status
