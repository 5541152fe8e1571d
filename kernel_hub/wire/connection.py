"""Connection info: allocate ports, write and read connection files securely."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import sys
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from .curve import curve_keys

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "CHANNELS",
    "ENDPOINT_KEYS",
    "ConnectionInfo",
    "channel_url",
    "endpoint",
    "new_connection_info",
    "ports_free",
    "read_connection_file",
    "runtime_dir",
    "write_connection_file",
    "write_private_file",
]

#: The five kernel channels and their connection-file port keys.
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")

#: What a client connects with: the fields a relaunch keeps so that clients do not notice.
ENDPOINT_KEYS = (
    "transport",
    "ip",
    *(f"{c}_port" for c in CHANNELS),
    "key",
    "signature_scheme",
    "curve_publickey",
)


class ConnectionInfo(TypedDict, total=False):
    """The fields of a Jupyter connection file (plus optional extras such as nanny ports)."""

    transport: str
    ip: str
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    key: str
    signature_scheme: str
    kernel_name: str
    curve_publickey: str
    curve_secretkey: str


# Ports recently handed out by this process, so two kernels started at the same
# moment never receive the same port between bind-and-close and the kernel's bind.
_recent_ports: deque[int] = deque(maxlen=512)


def port_band() -> tuple[int, int] | None:
    """Return a band of ports outside the OS's ephemeral range, or ``None`` if there is none.

    A port handed to a kernel is free only until the kernel binds it. Ports the
    OS picks for ``bind(0)`` come from the ephemeral range, which is also where
    every outgoing TCP connection (our own clients' included) takes its source
    port, so such a port can be taken in between and the kernel dies with
    "Address already in use". Below (or above) that range only deliberate binds
    compete, and a random choice there practically never collides.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        return None
    if low - 1 >= 12000:
        return 10000, low - 1
    if high + 1 <= 63000:
        return high + 1, 65535
    return None


def free_ports(n: int, ip: str = "127.0.0.1") -> list[int]:
    """Return *n* distinct TCP ports that are free on *ip* now (see :func:`port_band`)."""
    band = port_band()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        attempts = 0
        while len(ports) < n:
            attempts += 1
            s = socket.socket(family)
            socks.append(s)
            try:
                s.bind((ip, secrets.randbelow(band[1] - band[0] + 1) + band[0] if band else 0))
            except OSError:
                if attempts > 200:
                    band = None  # a crowded band: let the OS choose instead
                continue
            port = s.getsockname()[1]
            if port not in _recent_ports and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    _recent_ports.extend(ports)
    return ports


def new_connection_info(
    *,
    ip: str = "127.0.0.1",
    transport: str = "tcp",
    kernel_name: str = "",
    key: str | None = None,
    reuse: Mapping[str, Any] | None = None,
    curve: bool = False,
) -> ConnectionInfo:
    """Return connection info with fresh free ports on *ip* and a random key.

    Ports are bound to loopback unless the caller chooses another *ip*.

    :param curve: add a CurveZMQ keypair (``curve_publickey``, ``curve_secretkey``),
        for a kernel that declares support (see :func:`~kernel_hub.provider.curve_for`);
        on a relaunch *reuse*'s pair is kept with its key.

    :param reuse: on a relaunch, the previous process's connection info
        (:attr:`LaunchRequest.connection <kernel_hub.LaunchRequest>`): its key
        and signature scheme are kept, and its five ports too when they are all
        there, on the same *ip* and transport, and free now (:func:`ports_free`);
        otherwise the ports are new.
    """
    if transport != "tcp":
        raise ValueError(f"transport {transport!r} is not supported; use 'tcp'")
    scheme = "hmac-sha256"
    if reuse:
        if key is None and reuse.get("key") is not None:
            old_key = reuse["key"]
            key = old_key.decode("ascii") if isinstance(old_key, bytes) else str(old_key)
        scheme = reuse.get("signature_scheme") or scheme
    old = _reusable_ports(reuse, ip=ip, transport=transport)
    ports = old if old is not None else free_ports(5, ip)
    info: ConnectionInfo = {
        "transport": transport,
        "ip": ip,
        "key": key if key is not None else secrets.token_hex(32),
        "signature_scheme": scheme,
        "kernel_name": kernel_name,
    }
    for channel, port in zip(CHANNELS, ports, strict=True):
        info[f"{channel}_port"] = port  # type: ignore[literal-required]
    if curve:
        info.update(curve_keys(reuse))  # type: ignore[typeddict-item]
    return info


def _reusable_ports(
    previous: Mapping[str, Any] | None, *, ip: str, transport: str
) -> list[int] | None:
    """Return *previous*'s five ports if they can serve a kernel on *ip* now, else ``None``."""
    if not previous:
        return None
    if (previous.get("ip", ip), previous.get("transport", "tcp")) != (ip, transport):
        return None
    try:
        ports = [int(previous[f"{c}_port"]) for c in CHANNELS]
    except (KeyError, TypeError, ValueError):
        return None
    if any(p <= 0 for p in ports) or len(set(ports)) != len(ports):
        return None
    return ports if ports_free(ports, ip) else None


def ports_free(ports: Iterable[int], ip: str = "127.0.0.1") -> bool:
    """Return whether a kernel could bind every one of *ports* on *ip* now.

    Checked as ZeroMQ binds: with ``SO_REUSEADDR``, so the closed connections of
    a process that just died (``TIME_WAIT``) do not count, while a port another
    process listens on (or bound without ``SO_REUSEADDR``) does. Bound, never
    listened on: clients of the old process keep reconnecting to these ports, and
    a listening probe would accept (then drop) their connections.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for port in ports:
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


def endpoint(info: Mapping[str, Any]) -> dict[str, Any]:
    """Return the fields of *info* a client connects with (:data:`ENDPOINT_KEYS`)."""
    return {k: info.get(k) for k in ENDPOINT_KEYS}


def without_ports(info: Mapping[str, Any]) -> dict[str, Any]:
    """Return *info* without its five ports: what a relaunch keeps after a port was taken."""
    return {k: v for k, v in info.items() if k not in {f"{c}_port" for c in CHANNELS}}


def channel_url(info: Mapping[str, Any], channel: str) -> str:
    """Return the ZeroMQ URL of *channel* (``shell``, ``iopub``, …) in *info*."""
    ip = info.get("ip", "127.0.0.1")
    if ":" in ip:
        ip = f"[{ip}]"
    return f"{info.get('transport', 'tcp')}://{ip}:{info[f'{channel}_port']}"


def _jupyter_runtime_dir() -> str:
    """Return ``jupyter_core.paths.jupyter_runtime_dir()``, importing jupyter_core only if needed.

    jupyter_core.paths imports platformdirs, site and tempfile (≈10 modules, 1–2 MB
    of RSS) to answer what, on Linux and other Unixes without
    ``JUPYTER_PLATFORM_DIRS``, is a few environment lookups. Its rules are
    followed exactly here; other platforms ask it.
    """
    env = os.environ
    if env.get("JUPYTER_RUNTIME_DIR"):
        return env["JUPYTER_RUNTIME_DIR"]
    if sys.platform in ("darwin", "win32") or "JUPYTER_PLATFORM_DIRS" in env:
        from jupyter_core.paths import jupyter_runtime_dir

        return jupyter_runtime_dir()
    data = env.get("JUPYTER_DATA_DIR")
    if not data:
        xdg = env.get("XDG_DATA_HOME") or os.path.join(
            os.path.realpath(os.path.expanduser("~")), ".local", "share"
        )
        data = os.path.join(xdg, "jupyter")
    return os.path.join(data, "runtime")


def runtime_dir() -> Path:
    """Return the Jupyter runtime directory, created private (0700) if missing."""
    path = Path(_jupyter_runtime_dir())
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def write_connection_file(
    info: Mapping[str, Any], path: str | os.PathLike[str] | None = None, *, kernel_id: str = ""
) -> Path:
    """Write *info* as a connection file readable by its owner only (0600), atomically.

    The file is written under a temporary name in the same directory and renamed
    over *path*: a client reading it while a restarted kernel's file replaces the
    old one sees either whole file, never a half-written one.

    :param path: where to write; defaults to ``kernel-<kernel_id>.json`` in the runtime dir.
    :returns: the path written.
    """
    if path is None:
        path = runtime_dir() / f"kernel-{kernel_id or secrets.token_hex(8)}.json"
    path = Path(path)
    return write_private_file(path, json.dumps(dict(info), indent=1).encode())


def write_private_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write *data* to *path*, readable by its owner only (0600), atomically.

    Written under a temporary name in the same directory (a dotfile, which
    readers of the directory skip) and renamed over *path*: a reader sees the
    old file or the whole new one, never a half-written one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: a fresh file, created 0600 (never a file or link someone put there).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read a connection file, with an error naming the file if it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read connection file {os.fspath(path)!r}: {exc}") from None
    missing = [f"{c}_port" for c in CHANNELS if f"{c}_port" not in info]
    if not isinstance(info, dict) or missing or "key" not in info:
        raise ValueError(
            f"{os.fspath(path)!r} is not a kernel connection file (missing {missing or ['key']})"
        )
    return info  # type: ignore[return-value]


#: A connection key (or a Curve key) as ``str()`` and ``json.dumps()`` show it inside any
#: mapping: ``'key': '…'``, ``"curve_secretkey": "…"``, ``'key': b'…'``.
_KEY_TEXT = re.compile(
    r"""(?P<head>(['"])(?:curve_(?:secret|public))?key\2\s*:\s*b?)(?P<q>['"])(?:\\.|(?!(?P=q)).)*(?P=q)"""
)


def redact_keys(text: str) -> str:
    """Return *text* with every connection key (HMAC or Curve) in it shown as ``'<redacted>'``.

    For anything that logs connection info or objects holding it (hook traces,
    debug output): a key in a log is a key for whoever reads the log.
    """
    if "key" not in text:
        return text
    return _KEY_TEXT.sub(r"\g<head>\g<q><redacted>\g<q>", text)
