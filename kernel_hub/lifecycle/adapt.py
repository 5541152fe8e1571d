"""Adapting a pool's spare to a launch with another cwd and env (``hub.pool(adapt=True)``).

A spare of a Python kernel type may serve a launch whose ``cwd`` and ``env``
differ from its pool's: before it is handed out, the hub runs code in it,
silently (``silent=True``, ``store_history=False``, on a shell connection of its
own: no output reaches anyone and the execution count stays 0), that makes it
look as if it had been started for that launch:

- the working directory becomes the launch's (``os.chdir``; ``None``: the
  host's current directory, where a cold start would run); a first ``sys.path``
  entry equal to the old directory (what ``python -m``/``-c`` put there) becomes
  the new one, and ipykernel's ``''`` entry follows the directory by itself;
- every entry of the launch's ``env`` is set in ``os.environ`` (so subprocesses
  get it too); ``TZ`` is applied (``time.tzset()``) and ``TMPDIR``/``TEMP``/``TMP``
  reset :mod:`tempfile`'s cached directory;
- what IPython/ipykernel derive at start-up from these, and a user can see: the
  ``__session__`` variable from ``JPY_SESSION_NAME`` (as ipykernel sets it),
  the directory history ``_dh`` and the shell's ``starting_dir``.

What cannot be changed in a running process is not adapted: a launch is not
served by adapting a spare (a cold kernel starts instead) when its env gives a
variable read only at start-up (:func:`read_at_start`: ``PYTHON*`` such as
``PYTHONPATH``, ``LD_*``, ``LC_*``/``LANG``, ``HOME``, ``IPYTHON*``,
``JUPYTER_*``...) a value other than the spare's, when its env lacks a
variable the pool's own env sets (the spare could not unset it faithfully),
or when its cwd is not an existing directory (the cold start then reports it).
Modules the kernel imported at start-up (ipykernel, IPython, their
dependencies) were imported with the pool's environment.

Only Python kernels that run on this machine: the types of the ``ipykernel``
provider and ``spec`` types whose kernelspec language is ``python``
(:func:`adaptable_type`). Every other type keeps exact matching.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..client import AsyncKernelClient
from ..contract.errors import KernelHubError
from ..wire.transport import ZMQTransport

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..contract.types import KernelType

__all__ = [
    "ADAPTABLE_PROVIDERS",
    "ADAPT_TIMEOUT",
    "AdaptFailed",
    "Adaptation",
    "adaptable_type",
    "plan",
    "read_at_start",
    "run_adaptation",
]

#: Providers whose Python kernels run as local processes of this machine (cwd is a local path).
ADAPTABLE_PROVIDERS = ("ipykernel", "spec")
#: Seconds the adaptation may take before the spare is ended and a cold kernel started.
ADAPT_TIMEOUT = 10.0

#: Environment variables read only when a process (or Python, IPython, Jupyter) starts.
_AT_START = frozenset({"HOME", "LANG", "LANGUAGE", "TERM", "SHELL", "USER", "LOGNAME"})
_AT_START_PREFIXES = ("PYTHON", "LD_", "DYLD_", "LC_", "IPYTHON", "JUPYTER_", "MALLOC_", "PYDEVD")


def read_at_start(name: str) -> bool:
    """Return whether the environment variable *name* takes effect only at start-up.

    Such a variable cannot be given to a running kernel: a launch that sets it to
    another value than the spare's is served by a cold start.
    """
    return name in _AT_START or name.startswith(_AT_START_PREFIXES)


def adaptable_type(kernel_type: KernelType) -> bool:
    """Return whether spares of *kernel_type* may be adapted to another cwd and env.

    Python kernels of this machine: the ``ipykernel`` provider's types, and
    ``spec`` types whose kernelspec says ``"language": "python"``.
    """
    return (
        kernel_type.provider in ADAPTABLE_PROVIDERS
        and kernel_type.language.strip().lower() == "python"
    )


@dataclass(frozen=True)
class Adaptation:
    """What to change in a spare so that it is the kernel of a launch.

    :param cwd: the absolute working directory the kernel must have.
    :param env: the environment entries to set.
    """

    cwd: str
    env: Mapping[str, str]

    def code(self) -> str:
        """Return the Python code that makes the change in the kernel (leaves no names)."""
        payload = json.dumps({"cwd": self.cwd, "env": dict(self.env)})
        return _CODE.replace("PAYLOAD", repr(payload))


def plan(
    kernel_type: KernelType,
    *,
    pool_cwd: str | None,
    pool_env: Mapping[str, str],
    cwd: str | None,
    env: Mapping[str, str],
    host_env: Mapping[str, str] | None = None,
) -> Adaptation | None:
    """Return how to adapt a spare of a pool (*pool_cwd*, *pool_env*) to a launch, or ``None``.

    ``None``: the launch cannot be served by adapting (see the module's rules);
    a cold kernel starts for it.

    :param host_env: the environment spares inherit (this process's, by default).
    """
    if not adaptable_type(kernel_type):
        return None
    if any(name not in env for name in pool_env):
        return None  # the spare has a variable the launch's kernel would not
    base = dict(os.environ if host_env is None else host_env)
    spare_env = {**base, **kernel_type.env, **pool_env}
    for name, value in env.items():
        if read_at_start(name) and spare_env.get(name) != value:
            return None
        if read_at_start(name) and "$" in str(kernel_type.env.get(name, "")):
            return None  # the type's value was expanded at start: not known here
    target = os.path.abspath(cwd) if cwd is not None else os.getcwd()
    if not os.path.isdir(target):
        return None  # the cold start reports it, as without a pool
    del pool_cwd  # the spare says where it is; the code changes it whatever it was
    return Adaptation(target, dict(env))


class AdaptFailed(KernelHubError):
    """The adaptation code failed in the spare (the spare is ended; a cold kernel starts)."""


async def run_adaptation(
    connection_info: Mapping[str, Any], adaptation: Adaptation, *, timeout: float
) -> None:
    """Run *adaptation*'s code in the kernel silently; return once it has succeeded.

    Only a shell connection is opened: the reply says whether it worked, and
    nothing waits for IOPub.

    :raises AdaptFailed: when the code raised in the kernel, or no reply came in
        *timeout* seconds (the kernel may be half-adapted: end it).
    """
    transport = ZMQTransport(connection_info, identity=b"", channels=("shell",))
    client = AsyncKernelClient(connection_info, transport=transport)
    await client.connect()
    content = {
        "code": adaptation.code(),
        "silent": True,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    try:
        reply = await client.request("execute_request", content, timeout=timeout)
    except TimeoutError:
        raise AdaptFailed(f"the spare did not run its adaptation within {timeout:g} s") from None
    finally:
        await client.close()
    if reply.content.get("status") != "ok":
        what = f"{reply.content.get('ename', '')}: {reply.content.get('evalue', '')}".strip(": ")
        raise AdaptFailed(f"the spare's adaptation failed ({what or reply.content!r})")


# The code run in the spare. One function, called and deleted: the user's namespace keeps
# nothing of it. Its last check makes a half-done change an error (the spare is then ended).
_CODE = """\
def _kernel_hub_adapt(payload):
    import importlib, json, os, sys
    wanted = json.loads(payload)
    old, cwd, env = os.getcwd(), wanted["cwd"], wanted["env"]
    os.chdir(cwd)
    new = os.getcwd()
    if sys.path and sys.path[0] == old != new:  # python -m / -c put the start dir first
        sys.path[0] = new
    os.environ.update(env)
    if "TZ" in env:
        import time
        time.tzset()
    if {"TMPDIR", "TEMP", "TMP"} & set(env):
        import tempfile
        tempfile.tempdir = None
    importlib.invalidate_caches()
    import builtins
    getter = globals().get("get_ipython") or getattr(builtins, "get_ipython", None)
    shell = getter() if getter is not None else None
    if shell is not None:
        shell.starting_dir = new
        history = getattr(shell, "history_manager", None)
        if history is not None and hasattr(history, "dir_hist"):
            import pathlib
            history.dir_hist[:] = [pathlib.Path.cwd()]
        if env.get("JPY_SESSION_NAME"):
            shell.user_ns["__session__"] = env["JPY_SESSION_NAME"]
    if new != os.path.realpath(cwd) or any(os.environ.get(k) != v for k, v in env.items()):
        raise RuntimeError("kernel_hub: the spare's adaptation did not take")
try:
    _kernel_hub_adapt(PAYLOAD)
finally:
    del _kernel_hub_adapt
"""
