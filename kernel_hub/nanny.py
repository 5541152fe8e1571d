"""The nanny: start one kernel next to itself and serve its manager over signed ZeroMQ.

This file is shipped whole to machines where kernel_hub is not installed (over
SSH, into a container) and run there with any Python >= 3.8 that has pyzmq,
which every ipykernel installation brings::

    python3 - [options] < nanny.py

So it uses only the standard library and pyzmq, never imports kernel_hub or
jupyter_client, keeps to Python 3.8 syntax, and does nothing at import time:
``from kernel_hub.nanny import source`` is how a provider gets the text to send.
The protocol (options, handshake line, ops, events) is specified in
``docs/nanny-protocol.md``; the host side is :class:`kernel_hub.managers.remote.NannyManager`.
"""

# Annotations stay strings (never evaluated), so ``list[str]`` and ``X | None`` are fine on 3.8;
# runtime code must keep to 3.8: no match, no zip(strict=), no datetime.UTC.
from __future__ import annotations

# Only what comes before the kernel's start is imported here; the rest (pyzmq, hashlib and
# hmac for signing, datetime for log lines) where it is used, so the kernel starts sooner.
import argparse
import collections
import contextlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

TYPE_CHECKING = False  # typing itself is not imported: it costs ~2 ms, and this is for mypy
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

__all__ = ["BOOTSTRAP", "DELIM", "Nanny", "Signer", "main", "payload", "source"]

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.3"
DEFAULT_LINGER = 600.0
#: Seconds a kernel started with the registration handshake (JEP 66) has to report its ports.
REGISTRATION_TIMEOUT = 30.0
#: The signed acknowledgement of a kernel's registration report (its content is ours to pick).
REGISTRATION_ACK = b'{"status":"ok"}'
# ---- lease and limits (issue 15): constants ----
#: Seconds a nanny with no host connected waits for one before it ends its kernel and exits.
DEFAULT_LEASE = 300.0
#: The environment variable that sets the lease when ``--lease`` is not given.
LEASE_ENV = "KERNEL_HUB_NANNY_LEASE"
#: Largest frame accepted on the nanny's sockets; a bigger one drops that connection.
MAX_FRAME = 256 * 1024
#: At most this many unread messages queued per connection (ZeroMQ's default is 1000).
RECV_HWM = 100
#: Seconds between two log lines about dropped requests (the first is logged at once).
DROP_LOG_INTERVAL = 10.0
#: At most one nanny_welcome per this many seconds, however many subscriptions arrive.
WELCOME_INTERVAL = 0.05
#: Deepest nesting of arrays and objects accepted in a message's JSON: deeper is dropped
#: before parsing (``json.loads`` of a few thousand levels raises ``RecursionError``).
MAX_JSON_DEPTH = 64
# ---- end lease and limits ----

#: A JSON string (with its escapes), and a bracket; :func:`loads` skips the strings.
_JSON_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _loads(data: bytes) -> Any:
    """Parse one JSON part of a message, refusing more than :data:`MAX_JSON_DEPTH` levels.

    :raises ValueError: for invalid or too deeply nested JSON.
    """
    depth = 0
    for match in _JSON_STRING_OR_BRACKET.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif token in (b"]", b"}"):
            depth -= 1
    return json.loads(data)


KERNEL_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def source() -> str:
    """Return the text of this file, to be run remotely as ``python3 - < nanny.py``."""
    with open(os.path.abspath(__file__), encoding="utf-8") as f:
        return f.read()


#: ``python -c BOOTSTRAP [options]`` runs the nanny from :func:`payload` on its stdin: from
#: the host's compiled code when the Python there takes this Python's bytecode (the same
#: ``MAGIC_NUMBER``), which spares compiling ~60 kB before the kernel can start; else
#: from the source. Python 3.8 syntax, standard library only.
BOOTSTRAP = """\
import sys, zlib
from binascii import a2b_base64
_r = sys.stdin.buffer
_h = _r.readline().split()
_c, _s = _r.read(int(_h[2])), _r.read(int(_h[3]))
from importlib.util import MAGIC_NUMBER as _m
if _h[1] == _m.hex().encode():
    import marshal
    _o = marshal.loads(zlib.decompress(a2b_base64(_c)))
else:
    _o = compile(zlib.decompress(a2b_base64(_s)), "<kernel_hub nanny>", "exec", dont_inherit=True)
del _r, _h, _c, _s, _m
exec(_o)
"""

_payload: bytes | None = None


def payload() -> bytes:
    """Return what :data:`BOOTSTRAP` reads on stdin: a header line, the code, the source.

    The code is this Python's compilation of :func:`source` (its marshal form), made
    once per process; a Python whose bytecode differs compiles the source itself, as
    ``python3 - < nanny.py`` would. Both are compressed and in base64: ASCII, about as
    long as the source alone.
    """
    global _payload  # once per process: the file does not change under a running host
    if _payload is None:
        import base64
        import importlib.util
        import marshal
        import zlib

        text = source().encode("utf-8")
        code = compile(text, "<kernel_hub nanny>", "exec", dont_inherit=True)
        packed = base64.b64encode(zlib.compress(marshal.dumps(code), 9))
        plain = base64.b64encode(zlib.compress(text, 9))
        magic = importlib.util.MAGIC_NUMBER.hex().encode()
        header = b"KHNANNY %s %d %d\n" % (magic, len(packed), len(plain))
        _payload = header + packed + plain
    return _payload


def _utc_now() -> datetime:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)  # noqa: UP017 - 3.8


def _new_id() -> str:
    """Return a fresh message or session id: 128 random bits in hex (like ``uuid4().hex``)."""
    return os.urandom(16).hex()


def _log(message: str) -> None:
    """Write one line to stderr (the nanny's log; never the key)."""
    stamp = _utc_now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    try:
        sys.stderr.write(f"{stamp} kernel-hub-nanny[{os.getpid()}]: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr gone (SSH channel closed): logging must not kill the nanny


class NannyError(Exception):
    """A start-up failure; its message goes into the handshake's ``error``."""


class Signer:
    """HMAC-sign and check Jupyter multipart messages, refusing replays.

    :param key: the connection key.
    :param scheme: ``hmac-<hash>`` as in the connection file.
    """

    #: How many recent signatures are remembered to refuse replays.
    history_size = 2**16

    def __init__(self, key: bytes, scheme: str = "hmac-sha256") -> None:
        import hashlib
        import hmac

        self._compare = hmac.compare_digest
        kind, _, hash_name = scheme.partition("-")
        if kind != "hmac" or not hasattr(hashlib, hash_name):
            raise NannyError(f"unsupported signature_scheme {scheme!r}; use 'hmac-sha256'")
        self._auth = hmac.new(key, digestmod=getattr(hashlib, hash_name))
        self._seen: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def sign(self, parts: list[bytes]) -> bytes:
        h = self._auth.copy()
        for p in parts:
            h.update(p)
        return h.hexdigest().encode("ascii")

    def check(self, signature: bytes, parts: list[bytes]) -> str | None:
        """Return ``None`` if *signature* is valid and new, else why it is refused."""
        if not signature:
            return "unsigned message"
        if not self._compare(signature, self.sign(parts)):
            return "invalid signature"
        if signature in self._seen:
            return "replayed signature"
        self._seen[signature] = None
        if len(self._seen) > self.history_size:
            self._seen.popitem(last=False)
        return None


def _pack(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _write_private(path: str, info: dict[str, Any], *, fresh: bool = False) -> None:
    """Write *info* as JSON to *path*, 0600; atomically (temp file + rename) unless *fresh*."""
    target = path if fresh else path + ".tmp"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f, indent=1)
    if not fresh:
        os.replace(target, path)


def _report_port(report: dict[str, Any], name: str) -> int:
    value = report.get(name)
    try:
        port = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else 0
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ValueError(f"its {name!r} is {value!r}, not a port number (1-65535)")
    return port


def _parse_report(content: bytes, kernel_id: str) -> dict[str, int]:
    """Return the five ports of a registration report (kernel_hub.wire.registration.parse_report).

    :raises ValueError: saying what is wrong with it.
    """
    try:
        report = _loads(content)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"it is not JSON: {content[:80]!r}") from None
    if not isinstance(report, dict):
        raise ValueError(f"it is a JSON {type(report).__name__}, not an object")
    if report.get("kernel_id") != kernel_id:
        raise ValueError(
            f"its 'kernel_id' is {report.get('kernel_id')!r}, not this kernel's {kernel_id!r}"
        )
    ports = {name: _report_port(report, name) for name in KERNEL_PORTS}
    if len(set(ports.values())) != len(ports):
        raise ValueError(f"it reports the same port twice: {ports}")
    return ports


def _url(ip: str, port: Any) -> str:
    host = "[" + ip + "]" if ":" in ip else ip
    return f"tcp://{host}:{port}"


def _ports_free(ip: str, ports: list[int]) -> bool:
    """Return whether every one of *ports* can be bound on *ip* now, as ZeroMQ binds.

    (kernel_hub.wire.connection.ports_free; this file is self-contained.)
    """
    for port in ports:
        s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, int(port)))
        except (OSError, ValueError):
            return False
        finally:
            s.close()
    return True


#: os.urandom's random numbers (what the secrets module uses, which would import hmac too).
_sysrandom = random.SystemRandom()


def _free_ports(ip: str, n: int, avoid: tuple[int, ...] = ()) -> list[int]:
    """Return *n* distinct ports that are free on *ip* now, none of them in *avoid*.

    Chosen at random outside the OS's ephemeral range where possible: ports from
    ``bind(0)`` share that range with the source ports of outgoing connections,
    which can take one before the kernel binds it. (kernel_hub.wire.connection does
    the same; this file is self-contained, so it cannot import that.)
    """
    band = None
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        band = (10000, low - 1) if low - 1 >= 12000 else None
    except (OSError, ValueError):
        pass
    socks = []
    ports = []  # type: list[int]
    try:
        attempts = 0
        while len(ports) < n:
            attempts += 1
            s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET)
            socks.append(s)
            try:
                s.bind((ip, band[0] + _sysrandom.randrange(band[1] - band[0] + 1) if band else 0))
            except OSError:
                if attempts > 200:
                    band = None
                continue
            if s.getsockname()[1] not in ports and s.getsockname()[1] not in avoid:
                ports.append(s.getsockname()[1])
        return ports
    finally:
        for s in socks:
            s.close()


def _default_argv() -> list[str]:
    return [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


#: The first ipykernel that reads CurveZMQ keys from its connection file.
CURVE_SINCE = (7, 4)
#: ``--curve`` values: ``on`` (the host decided; keys from ``--curve-file`` or new),
#: ``auto`` (on when the kernel is this Python's ipykernel >= 7.4), ``required`` (the
#: same, or fail).
CURVE_MODES = ("on", "auto", "required")
CURVE_KEYS = ("curve_publickey", "curve_secretkey")


def _runs_this_ipykernel(argv: list[str]) -> bool:
    """Return whether *argv* runs this interpreter's ``ipykernel_launcher``."""
    if "ipykernel_launcher" not in argv:
        return False
    prog = os.path.realpath(shutil.which(argv[0]) or argv[0])
    return prog == os.path.realpath(sys.executable)


def _curve_support(argv: list[str]) -> str | None:
    """Return why the kernel of *argv* cannot speak CurveZMQ here, or ``None`` if it can."""
    if not _runs_this_ipykernel(argv):
        return "the kernel is not this Python's ipykernel, so its CurveZMQ support is unknown"
    site = _ipykernel_site()
    version = _ipykernel_version(site) if site is not None else None
    if version is None:
        return f"ipykernel is not installed for {sys.executable}"
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None or (int(match.group(1)), int(match.group(2))) < CURVE_SINCE:
        return f"ipykernel {version} of {sys.executable} has no CurveZMQ (7.4 or later has)"
    return None


def _ipykernel_site() -> str | None:
    """Return the folder holding this Python's ``ipykernel`` package, or ``None`` if none."""
    try:
        spec = importlib.util.find_spec("ipykernel")
    except (ImportError, ValueError):  # a broken or half-installed package
        return None
    folders = list(spec.submodule_search_locations or ()) if spec is not None else []
    return os.path.dirname(folders[0]) if folders else None


def _ipykernel_version(site: str) -> str | None:
    """Return the version of the ipykernel in *site*, or ``None`` if it has none.

    Read from the name of its ``.dist-info`` (or ``.egg-info``) there, as the ipykernel
    plugin does: ``importlib.metadata`` costs ~25 ms to import, before the kernel can start.
    """
    with contextlib.suppress(OSError):
        pattern = re.compile(r"ipykernel-([^-]+?)\.(?:dist|egg)-info$")
        found = {m.group(1) for m in map(pattern.match, os.listdir(site)) if m is not None}
        if len(found) == 1:
            return found.pop()
    from importlib import metadata  # none, or stale ones too: ask as pip would

    try:
        return metadata.version("ipykernel")
    except metadata.PackageNotFoundError:
        return None


def _check_ipykernel(argv: list[str]) -> None:
    """Fail early, with the fix, when argv runs this Python's ipykernel and it is missing.

    (Another interpreter reports its own missing module.)
    """
    if _runs_this_ipykernel(argv) and _ipykernel_site() is None:
        raise NannyError(
            f"ipykernel is not installed for {sys.executable}; "
            f"run: {sys.executable} -m pip install ipykernel"
        )


class Nanny:
    """One kernel, its work dir, and the two signed sockets that manage it.

    :param argv: the kernel's command line; ``{connection_file}`` is filled in.
    :param cwd: the kernel's working directory.
    :param env: extra environment variables for the kernel.
    :param ip: the address the kernel and the nanny's sockets bind to.
    :param kernel_name: written into the connection info.
    :param linger: how long to wait for ``restart``/``shutdown`` after the kernel died on its own.
    :param daemon: ignore SIGHUP (the nanny outlives the SSH channel that started it).
    :param lease: seconds to go on without any host connected before ending the kernel
        and exiting (see "Lease" in ``docs/nanny-protocol.md``).
    :param key: the connection key to use (dial-back mode: the host chose it; a relaunch:
        the old kernel's); default a fresh random one.
    :param ports: the kernel's five ports to reuse (a relaunch: the old kernel's), in
        ``KERNEL_PORTS`` order; used only if all are free now, else new ones are taken.
    :param registration: start the kernel with the registration handshake (JEP 66): it
        binds its own ports and reports them, instead of being given ports chosen here
        (unless *ports* are free to reuse: those are given to it in the file).
    :param registration_timeout: seconds the kernel has to report its ports.
    :param curve: CurveZMQ for the kernel's sockets and the nanny's: ``None`` (none), or
        one of :data:`CURVE_MODES`.
    :param curve_keys: the keypair to use (``curve_publickey``, ``curve_secretkey``, Z85
        strings: a relaunch's, or chosen by the host); default a new one.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        ip: str = "127.0.0.1",
        kernel_name: str = "",
        linger: float = DEFAULT_LINGER,
        daemon: bool = False,
        lease: float = DEFAULT_LEASE,
        key: str | None = None,
        ports: list[int] | None = None,
        registration: bool = False,
        registration_timeout: float = REGISTRATION_TIMEOUT,
        curve: str | None = None,
        curve_keys: dict[str, str] | None = None,
    ) -> None:
        if curve is not None and curve not in CURVE_MODES:
            raise NannyError(f"--curve must be one of {', '.join(CURVE_MODES)}, not {curve!r}")
        self.curve = curve
        self._curve_keys = dict(curve_keys or {})
        #: The kernel has keys chosen by the host, and pyzmq has not yet said it can use them.
        self._curve_unconfirmed = False
        self.argv = list(argv)
        self.registration = registration
        self.registration_timeout = registration_timeout
        self._registration_sock: Any = None
        #: The registration port's listening socket until ZeroMQ takes it over (ZMQ_USE_FD).
        self._registration_listener: socket.socket | None = None
        self._ports = list(ports or [])
        self.daemon = daemon
        self._key = key
        self.cwd = cwd
        self.env = dict(env or {})
        self.ip = ip
        self.kernel_name = kernel_name
        self.linger = linger
        self.workdir = ""
        self.connection_file = ""
        self.log_file = ""
        self.connection_info: dict[str, Any] = {}
        self.proc: subprocess.Popen | None = None
        self.kernel_pid: int | None = None
        self.exit_status: int | None = None
        #: Requests dropped because of a missing, wrong or replayed signature.
        self.bad_signatures = 0
        self.session = _new_id()
        self._signer: Signer | None = None
        self._zmq: Any = None
        self._ctx: Any = None
        self._control: Any = None
        self._events: Any = None
        self._wake_r = -1
        self._wake_w = -1
        self._signals: list[int] = []
        self._linger_deadline: float | None = None
        self._exit = False
        # ---- lease and limits (issue 15): state ----
        self.lease = float(lease)
        #: Connections open now, by (socket name, fd), from the sockets' monitors.
        self.peers: set[tuple[str, int]] = set()
        #: When the lease runs out (no host connected since); None while one is connected.
        self._lease_deadline: float | None = time.monotonic() + self.lease
        self._monitors: dict[Any, str] = {}
        self._drops = _DropLog()
        #: How many nanny_welcome events were published (bounded on subscription floods).
        self.welcomes = 0
        self._welcome_due: float | None = None
        self._last_welcome = 0.0
        #: Files of the host's that hold the key, removed when the nanny exits (``own_file``).
        self.owned_files: list[str] = []
        # ---- end lease and limits ----

    # ---- start ----

    def start(self) -> dict[str, Any]:
        """Make the work dir, start the kernel, bind the sockets; return the handshake.

        The kernel starts before pyzmq is imported and the nanny's sockets are bound:
        its own start (a Python and ``import ipykernel``, ~0.2 s) then overlaps the
        nanny's, instead of following it.
        """
        if importlib.util.find_spec("zmq") is None:
            raise NannyError(
                f"pyzmq is not installed for {sys.executable}; "
                f"run: {sys.executable} -m pip install ipykernel"
            )
        _check_ipykernel(self.argv)
        if self.cwd is not None and not os.path.isdir(self.cwd):
            what = "is not a directory" if os.path.exists(self.cwd) else "does not exist"
            raise NannyError(f"working directory {self.cwd!r} {what} on this machine")
        # Before anything to clean up exists: a SIGTERM from here on (a host that gave up on
        # this start) is handled once serving, so the work dir and kernel always go.
        self._install_signals()
        self.workdir = tempfile.mkdtemp(prefix=WORKDIR_PREFIX)  # mode 0700
        with open(os.path.join(self.workdir, PID_FILE), "w") as f:
            f.write(f"{os.getpid()} {_process_start(os.getpid())}")
        self.connection_file = os.path.join(self.workdir, "kernel.json")
        self.log_file = os.path.join(self.workdir, "kernel.log")
        key = self._key or os.urandom(32).hex()  # what secrets.token_hex(32) is
        # The kernel's five ports and two for the nanny's sockets, all distinct: the nanny
        # binds its own only once the kernel runs.
        ports = self._ports
        if len(ports) == len(KERNEL_PORTS) and _ports_free(self.ip, ports):
            own = _free_ports(self.ip, 2, avoid=tuple(ports))
        elif self.registration:
            # The kernel binds its own ports and reports them; the nanny's own take any port
            # (OS-chosen ones never clash with the kernel's, which are OS-chosen too).
            ports, own = [], [0, 0]
        else:
            chosen = _free_ports(self.ip, len(KERNEL_PORTS) + 2)
            ports, own = chosen[:-2], chosen[-2:]
        info: dict[str, Any] = {"transport": "tcp", "ip": self.ip}
        if ports:
            info.update({name: ports[i] for i, name in enumerate(KERNEL_PORTS)})
        info.update(key=key, signature_scheme="hmac-sha256", kernel_name=self.kernel_name)
        info.update(self._curve_pair())
        given = info
        if not ports:
            # The registration port must be held before the kernel starts: its file names it.
            given = {**info, **self._reserve_registration()}
        _write_private(self.connection_file, given, fresh=True)
        self._start_kernel()
        # Housekeeping once the kernel starts, not before: a shared /tmp may be large.
        _sweep_stale_workdirs(tempfile.gettempdir())
        try:
            import zmq
        except ImportError as exc:  # found above, but broken: the caller ends the kernel
            raise NannyError(f"cannot import pyzmq for {sys.executable}: {exc}") from None
        self._zmq = zmq
        if self._curve_unconfirmed and not zmq.has("curve"):
            given = self._without_curve(info, given)
        self._signer = Signer(key.encode("ascii"))
        if self._ctx is None:
            self._ctx = zmq.Context()
        if self._registration_listener is not None:
            self._open_registration()
        self._control = self._ctx.socket(zmq.ROUTER)
        # XPUB (wire-compatible with PUB) tells the nanny of each new subscription, so it can
        # publish nanny_welcome: proof to that subscriber that no later event will be lost.
        self._events = self._ctx.socket(zmq.XPUB)
        self._events.setsockopt(zmq.XPUB_VERBOSE, 1)
        if info.get("curve_secretkey"):  # the nanny's sockets are as private as the kernel's
            for sock in (self._control, self._events):
                sock.curve_secretkey = info["curve_secretkey"].encode("ascii")
                sock.curve_publickey = info["curve_publickey"].encode("ascii")
                sock.curve_server = True
        try:
            control_port = self._bind(self._control, own[0])
            events_port = self._bind(self._events, own[1])
        except zmq.ZMQError as exc:
            raise NannyError(f"cannot bind the nanny's sockets on {self.ip}: {exc}") from None
        self._watch_peers()
        if not ports:
            info.update(self._await_registration(given["kernel_id"]))
            # Now a classic connection file: for a restart, which gives the kernel these ports.
            _write_private(self.connection_file, info)
        info.update(nanny_control_port=control_port, nanny_events_port=events_port)
        self.connection_info = info
        return {
            "connection_info": info,
            "nanny_pid": os.getpid(),
            "kernel_pid": self.kernel_pid,
            "workdir": self.workdir,
        }

    # ---- the registration handshake (JEP 66) ----

    def _reserve_registration(self) -> dict[str, Any]:
        """Bind and listen on the registration port; return the registration file's extra fields.

        With the standard library, so that the kernel starts before pyzmq is imported (its
        start then overlaps the nanny's, as without the handshake); :meth:`_open_registration`
        hands this listening socket to ZeroMQ afterwards. The port is held all along, and a
        kernel that connects first waits in the listen backlog.
        (kernel_hub.wire.registration is the host's side of the same; this file is
        self-contained.) Besides the spec's fields, ``ip`` (where the kernel binds) is
        in the file and ``registration_port`` is a string: xeus-python 0.19 needs both.
        """
        listener = socket.socket(socket.AF_INET6 if ":" in self.ip else socket.AF_INET)
        try:
            listener.bind((self.ip, 0))
            listener.listen(100)  # ZeroMQ's own backlog
        except OSError as exc:
            listener.close()
            raise NannyError(f"cannot bind a registration socket on {self.ip}: {exc}") from None
        self._registration_listener = listener
        port = str(listener.getsockname()[1])
        return {"kernel_id": _new_id(), "registration_ip": self.ip, "registration_port": port}

    def _open_registration(self) -> None:
        """Make the one-shot registration socket, a ROUTER on the reserved port."""
        zmq = self._zmq
        listener = self._registration_listener
        assert listener is not None
        port = listener.getsockname()[1]
        sock = self._ctx.socket(zmq.ROUTER)
        self._registration_sock = sock
        sock.linger = 1000  # the acknowledgement must still go out once the socket is closed
        sock.setsockopt(zmq.MAXMSGSIZE, 64 * 1024)
        try:
            # ZeroMQ takes over the listening socket (libzmq >= 4.2): no moment without it.
            sock.setsockopt(zmq.USE_FD, listener.fileno())
        except (AttributeError, zmq.ZMQError):
            listener.close()  # an older libzmq: bound anew on the same port, at once
        else:
            listener.detach()  # the socket's fd is ZeroMQ's now: it closes it
        self._registration_listener = None
        try:
            sock.bind(_url(self.ip, port))
        except zmq.ZMQError as exc:
            raise NannyError(f"cannot bind the registration socket on {self.ip}: {exc}") from None

    def _await_registration(self, kernel_id: str) -> dict[str, int]:
        """Wait for the kernel's signed report, acknowledge it, return its five ports."""
        zmq = self._zmq
        sock = self._registration_sock
        assert self._signer is not None and sock is not None
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)  # SIGCHLD and the terminating signals
        deadline = time.monotonic() + self.registration_timeout
        dropped = 0
        try:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise NannyError(
                        f"the kernel exited (status {self.proc.returncode}) before it reported "
                        f"its ports on the registration socket; its last output: "
                        f"{self._log_tail(5) or '(none)'}"
                    )
                if any(sig != signal.SIGCHLD for sig in self._signals):
                    raise NannyError("stopped by a signal while the kernel was registering")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise NannyError(
                        f"the kernel did not report its ports on the registration socket within "
                        f"{self.registration_timeout:g} s ({dropped} bad message(s) dropped); "
                        "if it does not implement the registration handshake (JEP 66), launch "
                        "it without (launch param registration=false)"
                    )
                events = dict(poller.poll(left * 1000))
                if self._wake_r in events:
                    self._drain_wakeups()
                if sock not in events:
                    continue
                frames = sock.recv_multipart()
                idx = frames.index(DELIM) if DELIM in frames else -1
                if (
                    idx < 0
                    or len(frames) != idx + 3
                    or self._signer.check(frames[idx + 1], [frames[idx + 2]]) is not None
                ):
                    dropped += 1
                    self._drops.note("bad registration message")
                    continue
                try:
                    ports = _parse_report(frames[idx + 2], kernel_id)
                except ValueError as exc:
                    raise NannyError(
                        f"the kernel sent a malformed registration report: {exc}; it does not "
                        "follow the registration handshake (JEP 66), launch it without "
                        "(launch param registration=false)"
                    ) from None
                ack = [*frames[:idx], DELIM, self._signer.sign([REGISTRATION_ACK])]
                sock.send_multipart([*ack, REGISTRATION_ACK])
                _log(
                    f"the kernel reported its ports on the registration socket: {json.dumps(ports)}"
                )
                return ports
        finally:
            sock.close()
            self._registration_sock = None

    def _curve_pair(self) -> dict[str, str]:
        """Return the kernel's CurveZMQ keys for its connection file, or ``{}`` for none.

        :raises NannyError: for ``required`` with a kernel (or a pyzmq) that cannot.
        """
        if self.curve is None:
            return {}
        if self.curve != "on":
            why = _curve_support(self.argv)
            if why is not None:
                if self.curve == "required":
                    raise NannyError(f"transport_encryption is 'required', but {why}")
                return {}
        keys = self._curve_keys
        if keys.get("curve_publickey") and keys.get("curve_secretkey"):
            # The host chose the pair: pyzmq (~20 ms to import) need not delay the kernel's
            # start. Whether it has CurveZMQ is seen once imported (see _without_curve).
            self._curve_unconfirmed = True
            return {k: str(keys[k]) for k in CURVE_KEYS}
        try:
            import zmq
        except ImportError as exc:
            raise NannyError(f"cannot import pyzmq for {sys.executable}: {exc}") from None
        if not zmq.has("curve"):
            if self.curve == "auto":
                return {}
            raise NannyError(f"the pyzmq of {sys.executable} has no CurveZMQ (libsodium)")
        public, secret = zmq.curve_keypair()
        return {"curve_publickey": public.decode(), "curve_secretkey": secret.decode()}

    # ---- sockets ----

    def _bind(self, sock: Any, port: int) -> int:
        """Bind *sock* to *port* (``0``: any port), or to any port if that one was taken."""
        sock.linger = 1000  # long enough to deliver the shutdown reply, short enough to exit
        self._limit(sock)
        try:
            sock.bind(_url(self.ip, port or "*"))
        except self._zmq.ZMQError as exc:
            if exc.errno != self._zmq.EADDRINUSE:
                raise
            # Taken since it was chosen. Any port: from the OS's ephemeral range, which the
            # kernel's ports (chosen outside it where possible) do not share.
            sock.bind(_url(self.ip, "*"))
        endpoint = sock.getsockopt(self._zmq.LAST_ENDPOINT).decode()
        return int(endpoint.rsplit(":", 1)[1])

    def _without_curve(self, info: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """The kernel got the host's keys, but this pyzmq has no CurveZMQ: fail, or for
        ``auto``, start the kernel again without them; return its new file's contents."""
        if self.curve != "auto":
            raise NannyError(f"the pyzmq of {sys.executable} has no CurveZMQ (libsodium)")
        _log(f"the pyzmq of {sys.executable} has no CurveZMQ: the kernel runs unencrypted")
        self._stop_kernel(quiet=True)
        for name in CURVE_KEYS:
            info.pop(name, None)
        given = {k: v for k, v in given.items() if k not in CURVE_KEYS}
        _write_private(self.connection_file, given)
        self._start_kernel()
        return given

    def _start_kernel(self) -> None:
        argv = [
            a.replace("{connection_file}", self.connection_file).replace("{prefix}", sys.prefix)
            for a in self.argv
        ]
        env = dict(os.environ)
        env.update(self.env)
        # ipykernel exits when its parent goes away; its parent is this nanny.
        env["JPY_PARENT_PID"] = str(os.getpid())
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,  # its own process group: signals reach its children
                close_fds=True,
            )
        except OSError as exc:
            # No kernel now: a failed restart must not keep the nanny waiting forever.
            self._linger_deadline = time.monotonic() + self.linger
            raise NannyError(
                f"cannot start the kernel: running {argv[0]!r} failed "
                f"({exc.strerror or exc}); check the kernel's argv"
            ) from None
        finally:
            os.close(log_fd)
        self.proc = proc
        self.kernel_pid = proc.pid
        self.exit_status = None
        self._linger_deadline = None
        _log(f"kernel started, pid {proc.pid}: {' '.join(argv)}")

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # The C-level handler writes to this pipe, which wakes the zmq poll at once.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            if signum == signal.SIGHUP and self.daemon:
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)

    # ---- serve ----

    def serve(self) -> int:
        """Answer requests until ``shutdown``, a terminating signal, or the linger ran out."""
        zmq = self._zmq
        poller = zmq.Poller()
        poller.register(self._control, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        try:
            for mon in self._monitors:
                poller.register(mon, zmq.POLLIN)
            while not self._exit:
                timeout = None
                deadlines = [
                    d
                    for d in (self._linger_deadline, self._lease_deadline, self._welcome_due)
                    if d is not None
                ]
                deadlines += [d for d in [self._drops.due] if d is not None]
                if deadlines:
                    timeout = max(0.0, min(deadlines) - time.monotonic()) * 1000
                ready = dict(poller.poll(timeout))
                for mon in self._monitors:
                    if mon in ready:
                        self._drain_monitor(mon)
                if self._wake_r in ready:
                    self._drain_wakeups()
                self._handle_signals()
                self._check_kernel()
                if self._control in ready:
                    self._drain_control()
                if self._events in ready:
                    self._drain_subscriptions()
                self._timers()
                deadline = self._linger_deadline
                if deadline is not None and time.monotonic() >= deadline and not self._exit:
                    _log(f"no restart or shutdown within {self.linger} s of the kernel's death")
                    self._exit = True
        finally:
            self.close()
        return 0

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGCHLD:
                continue  # _check_kernel reaps
            _log(f"got signal {signum}: killing the kernel and exiting")
            # Not quiet: hosts waiting on the kernel learn that it is gone (the socket's linger
            # delivers the event before the nanny exits).
            self._stop_kernel(quiet=False)
            self._exit = True

    def _check_kernel(self) -> None:
        """Reap the kernel if it ended, kill what it left in its group, publish kernel_died."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        self._reaped(proc, quiet=False)

    def _reaped(self, proc: Any, *, quiet: bool) -> None:
        self.proc = None
        self.exit_status = proc.returncode
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # grandchildren left in the kernel's group
        except OSError:
            pass
        _log(f"kernel {proc.pid} ended, exit status {proc.returncode}")
        if not quiet:
            self._publish("kernel_died", {"exit_status": proc.returncode, "kernel_pid": proc.pid})
            self._linger_deadline = time.monotonic() + self.linger

    def _stop_kernel(self, *, quiet: bool) -> int | None:
        """SIGKILL the kernel's process group and reap it; return its exit status."""
        proc = self.proc
        if proc is None:
            return self.exit_status
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            _log(f"kernel {proc.pid} survived SIGKILL for 10 s")
            return None
        self._reaped(proc, quiet=quiet)
        return self.exit_status

    # ---- lease and limits (issue 15) ----

    def _limit(self, sock: Any) -> None:
        """Bound what one connection can make the nanny hold, and drop dead peers."""
        zmq = self._zmq
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)  # a bigger frame drops the connection
        sock.setsockopt(zmq.RCVHWM, RECV_HWM)
        # ZMTP heartbeats: the nanny pings every peer; one that does not answer (a host whose
        # machine or network went away, an SSH session that hangs) is disconnected, so it
        # stops holding the lease. Any libzmq >= 4.2 answers pings by itself.
        interval = max(0.2, min(5.0, self.lease / 4))
        sock.setsockopt(zmq.HEARTBEAT_IVL, int(interval * 1000))
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(interval * 2000))

    def _watch_peers(self) -> None:
        """Follow the connections of both sockets through their monitors (for the lease)."""
        zmq = self._zmq
        for name, sock in (("control", self._control), ("events", self._events)):
            mon = sock.get_monitor_socket(zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
            self._monitors[mon] = name

    def _unwatch_peers(self) -> None:
        for sock in (self._control, self._events):
            if sock is not None:
                with contextlib.suppress(Exception):
                    sock.disable_monitor()
        for mon in self._monitors:
            mon.close(linger=0)
        self._monitors = {}

    def _drain_monitor(self, mon: Any) -> None:
        zmq = self._zmq
        name = self._monitors[mon]
        while True:
            try:
                frames = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            event, fd = struct.unpack("=Hi", frames[0][:6])
            if event == zmq.EVENT_ACCEPTED:
                self.peers.add((name, fd))
            elif event == zmq.EVENT_DISCONNECTED:
                self.peers.discard((name, fd))
        if self.peers:
            self._lease_deadline = None
        elif self._lease_deadline is None:
            self._lease_deadline = time.monotonic() + self.lease

    def _timers(self) -> None:
        """Publish a due welcome, log a due drop summary, end the nanny when the lease ran out."""
        now = time.monotonic()
        if self._welcome_due is not None and now >= self._welcome_due:
            self._welcome_due = None
            self._last_welcome = now
            self.welcomes += 1
            self._publish("nanny_welcome", self._status())
        if self._drops.due is not None and now >= self._drops.due:
            self._drops.flush()
        deadline = self._lease_deadline
        if deadline is not None and now >= deadline and not self._exit:
            _log(
                f"no host connected for {self.lease:g} s (the lease): "
                "shutting the kernel down and exiting"
            )
            self._exit = True

    # ---- messages ----

    def _msg(self, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> list[bytes]:
        header = {
            "msg_id": _new_id(),
            "msg_type": msg_type,
            "username": "kernel-hub-nanny",
            "session": self.session,
            "date": _utc_now().isoformat(),
            "version": PROTOCOL_VERSION,
        }
        parts = [_pack(header), _pack(parent), _pack({}), _pack(content)]
        assert self._signer is not None
        return [DELIM, self._signer.sign(parts), *parts]

    def _publish(self, event: str, content: dict[str, Any]) -> None:
        frames = self._msg(event, content, {})
        self._events.send_multipart([event.encode(), *frames])

    def _drain_subscriptions(self) -> None:
        zmq = self._zmq
        while True:
            try:
                frame = self._events.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if frame[:1] == b"\x01" and self._welcome_due is None:
                # A (re)subscription, not an unsubscription. One welcome, published after every
                # subscription read so far, answers them all: a flood of them gets few.
                self._welcome_due = max(time.monotonic(), self._last_welcome + WELCOME_INTERVAL)

    def _status(self) -> dict[str, Any]:
        return {
            "alive": self.proc is not None,
            "exit_status": self.exit_status,
            "kernel_pid": self.kernel_pid,
            "nanny_pid": os.getpid(),
        }

    def _drain_control(self) -> None:
        zmq = self._zmq
        while not self._exit:
            try:
                frames = self._control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle_request(frames)

    def _handle_request(self, frames: list[bytes]) -> None:
        try:
            idx = frames.index(DELIM)
        except ValueError:
            idx = -1
        if idx < 1 or len(frames) < idx + 6:
            self.bad_signatures += 1
            self._drops.note("not a Jupyter message")
            return
        idents, signature, parts = frames[:idx], frames[idx + 1], frames[idx + 2 : idx + 6]
        assert self._signer is not None
        why = self._signer.check(signature, parts)
        if why is not None:
            self.bad_signatures += 1
            self._drops.note(why)
            return
        try:
            header = _loads(parts[0])
            content = _loads(parts[3])
            op = content["op"]
        except (ValueError, KeyError, TypeError):
            header, content, op = {}, {}, None
        try:
            reply = self._dispatch(op, content)
        except Exception as exc:  # noqa: BLE001 - the caller gets the error, the nanny lives
            reply = {"status": "error", "evalue": f"{op}: {exc}"}
        self._control.send_multipart([*idents, *self._msg("nanny_reply", reply, header)])
        if op == "shutdown":
            self._exit = True

    def _dispatch(self, op: Any, content: dict[str, Any]) -> dict[str, Any]:
        ok: dict[str, Any] = {"status": "ok"}
        if op == "ping":
            ok.update(nanny_pid=os.getpid(), bad_signatures=self.bad_signatures)
        elif op == "is_alive":
            self._check_kernel()
            ok.update(
                alive=self.proc is not None,
                exit_status=self.exit_status,
                kernel_pid=self.kernel_pid,
            )
        elif op in ("signal", "interrupt"):
            signum = signal.SIGINT if op == "interrupt" else int(content["signum"])
            if self.proc is not None:
                try:
                    os.killpg(self.proc.pid, signum)
                except ProcessLookupError:
                    pass
        elif op == "kill":
            ok["exit_status"] = self._stop_kernel(quiet=False)
        elif op == "restart":
            self._stop_kernel(quiet=True)
            self._start_kernel()
            self._publish("kernel_restarted", {"kernel_pid": self.kernel_pid})
            ok["kernel_pid"] = self.kernel_pid
        elif op == "shutdown":
            self._stop_kernel(quiet=True)
        elif op == "cpu":  # the culler's "is it working?" (issue 23)
            self._check_kernel()
            proc = self.proc
            ok["cpu_seconds"] = None if proc is None else _group_cpu_seconds(proc.pid)
        elif op == "log_tail":
            ok["text"] = self._log_tail(int(content.get("lines", 20)))
        elif op == "own_file":  # issue 15: e.g. launch --nanny's connection file
            path = content.get("path")
            if not isinstance(path, str) or not os.path.isabs(path):
                return {"status": "error", "evalue": "own_file needs an absolute 'path'"}
            self.owned_files.append(path)
        else:
            return {"status": "error", "evalue": f"unknown op {op!r}"}
        return ok

    def _log_tail(self, lines: int) -> str:
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    # ---- stop ----

    def close(self) -> None:
        """Kill the kernel if alive, tell subscribers, close the sockets, remove the work dir."""
        self._stop_kernel(quiet=True)
        self._drops.flush()
        self._unwatch_peers()
        if self._events is not None:
            # Every manager of this kernel (not just the one that asked) learns that there
            # is nobody left to ask: their own shutdown need not wait for a reply.
            with contextlib.suppress(Exception):
                self._publish(
                    "nanny_exiting",
                    {"exit_status": self.exit_status, "kernel_pid": self.kernel_pid},
                )
        if self._registration_listener is not None:
            self._registration_listener.close()
            self._registration_listener = None
        for sock in (self._control, self._events, self._registration_sock):
            if sock is not None:
                sock.close()  # with linger: a last reply still goes out
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        for path in self.owned_files:
            # Only a regular file of this user's: never follow a link put there meanwhile.
            with contextlib.suppress(OSError):
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid():
                    os.unlink(path)
        _log("exiting")


# ---- lease and limits (issue 15): the drop log ----


class _DropLog:
    """Log dropped requests without letting a flood fill the log.

    The first drop is logged at once; later ones are counted by reason and
    summarised in one line at most every :data:`DROP_LOG_INTERVAL` seconds
    (and when the nanny exits).
    """

    def __init__(self, interval: float = DROP_LOG_INTERVAL) -> None:
        self.interval = interval
        self.total = 0
        self.counts: dict[str, int] = {}
        #: When the pending summary is to be logged; None when nothing is pending.
        self.due: float | None = None
        self._last = -interval

    def note(self, reason: str) -> None:
        self.total += 1
        now = time.monotonic()
        if self.due is None and now - self._last >= self.interval:
            self._last = now
            _log(f"dropped a request ({reason}); {self.total} dropped so far")
            return
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if self.due is None:
            self.due = self._last + self.interval

    def flush(self) -> None:
        if self.counts:
            what = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
            _log(f"dropped {sum(self.counts.values())} more requests ({what}); {self.total} so far")
        self.counts = {}
        self.due = None
        self._last = time.monotonic()


# ---- end lease and limits ----


#: The environment variable a host may pass a relaunch's key in (removed before the kernel
#: starts); kernel_hub's own hosts send it with ``--secrets`` instead.
KEY_ENV = "KERNEL_HUB_NANNY_KEY"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="nanny.py", description="Start a Jupyter kernel and serve its manager over ZeroMQ."
    )
    p.add_argument("--argv", help="the kernel's argv as JSON, with {connection_file}")
    p.add_argument("--cwd", help="the kernel's working directory")
    p.add_argument("--env", help="extra environment variables as a JSON object")
    p.add_argument("--ip", default="127.0.0.1", help="the address to bind (default 127.0.0.1)")
    p.add_argument("--kernel-name", default="", help="kernel_name in the connection info")
    p.add_argument(
        "--ports",
        help="the kernel's five ports to reuse if free, as a JSON list (a relaunch); the key "
        f"to reuse comes in --secrets (or ${KEY_ENV}), never on the command line",
    )
    p.add_argument(
        "--curve",
        choices=CURVE_MODES,
        help="CurveZMQ for the kernel and the nanny's sockets: 'on', 'auto' (if the kernel is "
        "this Python's ipykernel >= 7.4) or 'required'",
    )
    p.add_argument(
        "--secrets",
        "--curve-file",
        metavar="FILE",
        help="a 0600 JSON file of the secrets the host chose, deleted at once: 'key' (the "
        "connection key to reuse) and the CurveZMQ pair (curve_publickey, curve_secretkey); "
        "'-': the same as a JSON line on stdin after the code (python -c BOOTSTRAP); "
        "secrets never come on the command line",
    )
    p.add_argument("--daemon", action="store_true", help="detach after the handshake")
    p.add_argument(
        "--registration",
        action="store_true",
        help="start the kernel with the registration handshake (JEP 66, protocol 5.6): it "
        "binds its own ports and reports them",
    )
    p.add_argument(
        "--registration-timeout",
        type=float,
        default=REGISTRATION_TIMEOUT,
        help=f"seconds the kernel has to report its ports (default {REGISTRATION_TIMEOUT:g})",
    )
    p.add_argument(
        "--register",
        metavar="FILE",
        help="dial-back mode: read the options and key from FILE (deleted at once) and "
        "register with the host instead of printing the handshake",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=DEFAULT_LINGER,
        help="seconds to wait for restart/shutdown after the kernel died (default 600)",
    )
    p.add_argument(
        "--lease",
        type=float,
        default=None,
        help=f"seconds to go on with no host connected before ending the kernel and exiting "
        f"(default: ${LEASE_ENV}, else {DEFAULT_LEASE:g})",
    )
    return p.parse_args(argv)


def _read_secret_file(path: str) -> dict[str, Any]:
    """Read and delete a JSON file of secrets the host left for this nanny (0600).

    ``-``: the next line of stdin instead (after :data:`BOOTSTRAP`'s payload): no file.
    """
    if path == "-":
        data = json.loads(sys.stdin.buffer.readline() or b"null")
        if not isinstance(data, dict):
            raise ValueError("stdin does not hold a JSON object after the nanny's code")
        return data
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def _lease(value: float | None) -> float:
    """Return the lease from ``--lease``, else the environment, else the default."""
    if value is None:
        text = os.environ.get(LEASE_ENV, "")
        try:
            value = float(text) if text else DEFAULT_LEASE
        except ValueError:
            raise NannyError(f"{LEASE_ENV}={text!r} is not a number of seconds") from None
    if not value > 0:
        raise NannyError(f"the lease must be a positive number of seconds, not {value}")
    return value


#: Work dirs are ``<tmp>/kernel-hub-nanny-XXXXXXXX`` (0700), holding PID_FILE while the nanny runs.
WORKDIR_PREFIX = "kernel-hub-nanny-"
PID_FILE = "nanny.pid"


def _stat_fields(pid: int | str) -> list[bytes]:
    """Return the fields of ``/proc/<pid>/stat`` after the command name; ``[]`` if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The command name may hold spaces and ")": split after its last ")".
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _process_start(pid: int) -> str:
    """Return when *pid* started (clock ticks since boot), or ``""`` without ``/proc``.

    With the pid it names one process: a pid alone may have been reused.
    """
    fields = _stat_fields(pid)
    return fields[19].decode() if len(fields) > 19 else ""


def _group_cpu_seconds(group: int) -> float | None:
    """Return the CPU seconds of process group *group* (its live processes and what they reaped).

    The twin of ``kernel_hub.managers.procs.group_cpu_seconds``, without its cache (one
    kernel per nanny); ``None`` without ``/proc`` or when no process is in the group.
    """
    total, found = 0, False
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    for name in names:
        if not name.isdigit():
            continue
        fields = _stat_fields(name)
        if len(fields) < 15 or fields[0] in (b"Z", b"X") or int(fields[2]) != group:
            continue
        found = True
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / os.sysconf("SC_CLK_TCK") if found else None


def _sweep_stale_workdirs(base: str) -> None:
    """Remove the work dirs this user's nannies left when killed outright (``kill -9``).

    A nanny removes its own work dir when it exits, unless it cannot run at all;
    the next nanny on the machine then removes it: any ``kernel-hub-nanny-*``
    dir of ours whose PID_FILE names a process that no longer runs. A dir
    without that file (a nanny starting right now) is left alone.
    """
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        if not name.startswith(WORKDIR_PREFIX):
            continue
        path = os.path.join(base, name)
        try:
            info = os.lstat(path)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            with open(os.path.join(path, PID_FILE)) as f:
                pid_text, _, started = f.read().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True  # someone else's process now: its start time tells
        if alive and _process_start(pid) == started:
            continue
        _log(f"removing {path}, left by nanny {pid} that ended without cleaning up")
        shutil.rmtree(path, ignore_errors=True)


def _daemonize() -> int:
    """Fork; the parent relays the child's handshake line and exits. Return the write fd.

    Only a process that is not a group leader may start a new session, and the
    process that sshd started is one; so the child, a fresh pid, does the work.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(w)
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        line = b"".join(chunks)
        sys.stdout.write(line.decode("utf-8", "replace"))
        sys.stdout.flush()
        os._exit(0 if line.startswith(b'{"connection_info"') else 1)
    os.close(r)
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return w


def _redirect_stdio(path: str) -> None:
    """Point stdin at /dev/null and stdout/stderr at *path*, so the SSH channel can close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)


# ---- dial-back mode (batch schedulers) ------------------------------------------------------
# A batch job's node and free ports are known only once it runs, so the host cannot connect
# first. Instead the host opens a one-shot registration endpoint (a ZeroMQ ROUTER), chooses
# the kernel's key, and leaves both in a 0600 file that only the job reads. The nanny reads
# and deletes that file, starts the kernel with that key, and sends the handshake *without
# the key* to the endpoint, signed with it; the host acknowledges with a signed reply. The
# key never travels, and never appears on a command line, in the job script or its
# environment. See docs/nanny-protocol.md ("Dial-back mode").

#: Signals a dial-back nanny passes on to the kernel's process group instead of exiting:
#: how ``scancel --signal=INT --batch`` interrupts a kernel whose nanny cannot be reached.
RELAYED_SIGNALS = ("SIGINT", "SIGUSR1", "SIGUSR2")


def _route_address(url: str) -> str:
    """Return this machine's address on the route to *url*'s host (no packet is sent)."""
    host = url.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((host, 9))  # UDP connect only picks the route and the source address
        return str(s.getsockname()[0])


def _registration_message(signer: Signer, msg_type: str, content: dict[str, Any]) -> list[bytes]:
    header = {
        "msg_id": _new_id(),
        "msg_type": msg_type,
        "username": "kernel-hub-nanny",
        "session": _new_id(),
        "date": _utc_now().isoformat(),
        "version": PROTOCOL_VERSION,
    }
    parts = [_pack(header), _pack({}), _pack({}), _pack(content)]
    return [DELIM, signer.sign(parts), *parts]


def dial_back(register_file: str) -> int:
    """Run a nanny that registers with the host instead of printing its handshake.

    *register_file* is JSON written by the host: ``url`` (the registration
    endpoint), ``key``, and optionally ``argv``, ``cwd``, ``env``, ``ip``
    (``"auto"``: the address on the route to the host), ``kernel_name``,
    ``linger``, ``lease``, ``register_timeout``, ``curve`` (a :data:`CURVE_MODES`
    value) with the host's ``curve_publickey`` and ``curve_secretkey``. It is deleted
    before anything else.
    """
    try:
        with open(register_file, encoding="utf-8") as f:
            opts = json.load(f)
        os.unlink(register_file)
        url, key = str(opts["url"]), str(opts["key"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _log(f"cannot read the registration file {register_file}: {exc}")
        return 1
    signer = Signer(key.encode("ascii"), str(opts.get("signature_scheme", "hmac-sha256")))
    try:
        import zmq
    except ImportError:
        _log(
            f"pyzmq is not installed for {sys.executable}; "
            f"run: {sys.executable} -m pip install ipykernel"
        )
        return 1
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 2000
    sock.connect(url)
    nanny = None
    try:
        try:
            ip = str(opts.get("ip") or "auto")
            nanny = Nanny(
                list(opts.get("argv") or _default_argv()),
                cwd=opts.get("cwd"),
                env={str(k): str(v) for k, v in dict(opts.get("env") or {}).items()},
                ip=_route_address(url) if ip == "auto" else ip,
                kernel_name=str(opts.get("kernel_name", "")),
                linger=float(opts.get("linger", DEFAULT_LINGER)),
                key=key,
                lease=_lease(opts.get("lease")),  # as in the other mode: a host must hold it
                registration=bool(opts.get("registration", False)),
                registration_timeout=float(opts.get("registration_timeout", REGISTRATION_TIMEOUT)),
                curve=opts.get("curve"),
                # The host chose them, as it chose the key: they never travel back.
                curve_keys={k: opts[k] for k in CURVE_KEYS if k in opts},
            )
            handshake = nanny.start()
        except (NannyError, OSError, ValueError) as exc:
            _log(f"cannot start: {exc}")
            if nanny is not None:
                # The kernel may run already (a registration handshake that failed): it and
                # the work dir go before the error does, as in the other mode.
                nanny.close()
                nanny = None
            sock.send_multipart(
                _registration_message(signer, "nanny_register", {"error": str(exc)})
            )
            return 1
        # The registration is signed, not encrypted: nothing secret goes back. The Curve public
        # key is secret too (with it, anyone may connect), so only whether it is used does.
        info = {
            k: v for k, v in handshake["connection_info"].items() if k not in ("key", *CURVE_KEYS)
        }
        content = {
            **handshake,
            "connection_info": info,
            "hostname": socket.gethostname(),
            "curve": "curve_publickey" in handshake["connection_info"],
        }
        sock.send_multipart(_registration_message(signer, "nanny_register", content))
        timeout_ms = float(opts.get("register_timeout", 60)) * 1000
        if not _registration_acked(sock, signer, timeout_ms):
            _log(f"the host at {url} did not acknowledge the registration; exiting")
            nanny.close()  # nobody will manage this kernel: don't hold the allocation
            return 1
    finally:
        sock.close()
        ctx.term()
        if nanny is not None and nanny.proc is None and nanny.workdir:
            nanny.close()  # failed before the kernel ran: remove the work dir
    _log(f"registered with {url}")

    def relay(signum: int, frame: Any) -> None:
        proc = nanny.proc if nanny is not None else None
        if proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signum)

    for name in RELAYED_SIGNALS:
        signal.signal(getattr(signal, name), relay)
    return nanny.serve()


def _registration_acked(sock: Any, signer: Signer, timeout_ms: float) -> bool:
    """Wait for the host's signed ``nanny_registered`` reply."""
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not sock.poll(left * 1000):
            return False
        frames = sock.recv_multipart()
        if len(frames) >= 6 and frames[0] == DELIM:
            if signer.check(frames[1], frames[2:6]) is None:
                with contextlib.suppress(ValueError, KeyError):
                    if _loads(frames[2])["msg_type"] == "nanny_registered":
                        return True
        _log("dropped a registration reply with a bad signature")


# ---- end of dial-back mode -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the nanny: print the handshake line, then serve until told to stop."""
    args = _parse_args(argv)
    if args.register:
        return dial_back(args.register)
    out_fd = _daemonize() if args.daemon else None

    def say(obj: dict[str, Any]) -> None:
        line = (json.dumps(obj) + "\n").encode("utf-8")
        if out_fd is not None:
            os.write(out_fd, line)
            os.close(out_fd)
        else:
            sys.stdout.write(line.decode("utf-8"))
            sys.stdout.flush()

    nanny = None
    try:
        secrets = _read_secret_file(args.secrets) if args.secrets else {}
        curve_keys = {k: secrets[k] for k in CURVE_KEYS if k in secrets}
        # A relaunch's key. The environment's is removed either way: the kernel inherits none.
        env_key = os.environ.pop(KEY_ENV, None)
        key = secrets.get("key") or env_key
        if key is not None and (not isinstance(key, str) or not key.isprintable()):
            raise NannyError("the key to reuse is not a printable string")
        kernel_argv = json.loads(args.argv) if args.argv else _default_argv()
        env = json.loads(args.env) if args.env else {}
        if not isinstance(kernel_argv, list) or not all(isinstance(a, str) for a in kernel_argv):
            raise NannyError("--argv must be a JSON list of strings")
        if not isinstance(env, dict):
            raise NannyError("--env must be a JSON object")
        nanny = Nanny(
            kernel_argv,
            cwd=args.cwd,
            env={str(k): str(v) for k, v in env.items()},
            ip=args.ip,
            kernel_name=args.kernel_name,
            linger=args.linger,
            daemon=args.daemon,
            lease=_lease(args.lease),
            key=key,
            ports=json.loads(args.ports) if args.ports else None,
            registration=args.registration,
            registration_timeout=args.registration_timeout,
            curve=args.curve,
            curve_keys=curve_keys,
        )
        handshake = nanny.start()
    except (NannyError, ValueError, OSError) as exc:
        if nanny is not None:
            nanny.close()
        say({"error": str(exc)})
        return 1
    if args.daemon:
        _redirect_stdio(os.path.join(nanny.workdir, "nanny.log"))
    try:
        say(handshake)
    except OSError as exc:
        # Nobody reads the handshake: the host died while the nanny started (issue 15).
        _log(f"the host is gone before the handshake ({exc}): ending the kernel and exiting")
        nanny.close()
        return 1
    return nanny.serve()


if __name__ == "__main__":
    sys.exit(main())
