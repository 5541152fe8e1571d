"""The Jupyter wire format: build, sign, serialise and parse messages.

This is the only module that imports :mod:`jupyter_protocol`. Messages are
``jupyter_protocol.messages.Message`` objects (``content``, ``header``,
``parent_header``, ``metadata``, ``buffers``, ``idents``), so code written
against that API keeps working. Serialisation and signature checks are done
here rather than by ``jupyter_protocol.session.Session``, which parses every
header date with dateutil and runs the version adapter on every message: the
hot path of a busy IOPub stream. Here header dates stay ISO-8601 strings on
the decoded message; :func:`message_date` parses one when someone asks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jupyter_protocol._version import protocol_version
from jupyter_protocol.messages import Message

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "DELIM",
    "PROTOCOL_VERSION",
    "BadSignature",
    "Message",
    "Session",
    "message_date",
    "new_id",
]

DELIM = b"<IDS|MSG>"
PROTOCOL_VERSION: str = protocol_version

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decode_str = json.JSONDecoder().decode


def _decode_parts(parts: Sequence[bytes]) -> list[Any]:
    """Decode the four JSON parts of a message with one parser call.

    One ``decode`` of ``[h,p,m,c]`` costs about a quarter of four ``json.loads``
    calls on bytes (which sniff the encoding each time): this is the hot path of
    an IOPub flood. Only the signature-checked parts of one message are joined, and
    the result must be exactly four objects, so a part cannot smuggle in a second.
    The header must be an object; the other three may also be ``null``, read as
    ``{}`` (xeus-python 0.19 sends ``iopub_welcome`` with a ``null`` parent header
    and metadata, and jupyter_client accepts that).
    """
    joined = b"".join((b"[", parts[0], b",", parts[1], b",", parts[2], b",", parts[3], b"]"))
    try:
        values = _decode_str(joined.decode("utf-8"))
    except RecursionError:  # JSON nested thousands deep: refuse it like any other bad JSON
        raise ValueError("nested too deeply") from None
    if len(values) != 4:
        raise ValueError("the four message parts must each be one JSON object")
    for i in (1, 2, 3):
        if values[i] is None:
            values[i] = {}
    if not all(type(v) is dict for v in values):
        raise ValueError("the four message parts must each be one JSON object")
    return values


#: Content fields the client reads, per message type, and the type each must have.
_CONTENT_TYPES: dict[str, tuple[tuple[str, type], ...]] = {
    "status": (("execution_state", str),),
}


def _check_shape(header: dict[str, Any], parent: dict[str, Any], content: dict[str, Any]) -> None:
    """Refuse a message whose fields the client relies on have the wrong type.

    After this, ``header["msg_id"]`` and ``header["msg_type"]`` are non-empty strings,
    ``parent["msg_id"]`` is a string if present, and the content fields listed in
    :data:`_CONTENT_TYPES` have their types: code that routes messages can use them
    as dict keys and compare them without guarding against lists or ``None``.
    """
    for field in ("msg_id", "msg_type"):
        value = header.get(field)
        if type(value) is not str or not value:
            raise ValueError(f"header.{field} must be a non-empty string, not {value!r:.40}")
    parent_id = parent.get("msg_id")
    if parent_id is None:
        parent.pop("msg_id", None)  # a null parent id is no parent id: absent, as documented
    elif type(parent_id) is not str:
        raise ValueError(f"parent_header.msg_id must be a string, not {parent_id!r:.40}")
    for field, kind in _CONTENT_TYPES.get(header["msg_type"], ()):
        value = content.get(field)
        if type(value) is not kind:
            raise ValueError(
                f"{header['msg_type']} content.{field} must be a {kind.__name__}, not {value!r:.40}"
            )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


_fallback_encoder = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
)


def _pack(obj: Any) -> bytes:
    try:
        return _encoder.encode(obj).encode("utf-8")
    except TypeError:
        return _fallback_encoder.encode(obj).encode("utf-8")


def new_id() -> str:
    """Return a new random message or session id."""
    return uuid.uuid4().hex


def message_date(msg: Message) -> datetime | None:
    """Return the header date of *msg* as an aware datetime (parsed on demand)."""
    raw = msg.header.get("date")
    if raw is None or isinstance(raw, datetime):
        return raw
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class BadSignature(ValueError):
    """A message's HMAC signature is missing, wrong or replayed."""


class Session:
    """Sign and (de)serialise messages for one connection key.

    :param key: the connection key (``bytes`` or ``str``); empty disables signing,
        which kernel_hub never does by itself.
    :param signature_scheme: ``hmac-<hash>``, as in the connection file.
    :param username: the ``username`` header field.
    """

    #: How many recent signatures are remembered to refuse replays.
    digest_history_size = 2**16

    def __init__(
        self,
        key: bytes | str,
        signature_scheme: str = "hmac-sha256",
        *,
        username: str | None = None,
    ) -> None:
        self.key = key.encode("ascii") if isinstance(key, str) else bytes(key)
        self.signature_scheme = signature_scheme
        scheme, _, hash_name = signature_scheme.partition("-")
        if scheme != "hmac" or not hash_name:
            raise ValueError(
                f"unsupported signature_scheme {signature_scheme!r}; use 'hmac-sha256'"
            )
        try:
            digestmod = getattr(hashlib, hash_name)
        except AttributeError:
            raise ValueError(f"unknown hash {hash_name!r} in {signature_scheme!r}") from None
        self._auth = hmac.new(self.key, digestmod=digestmod) if self.key else None
        self.session_id = new_id()
        self.username = username or os.environ.get("USER", "kernel_hub")
        self._digests: OrderedDict[bytes, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"<Session {self.session_id[:8]} {self.signature_scheme}>"

    # ---- building ----

    def msg(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        parent: Message | None = None,
        metadata: Mapping[str, Any] | None = None,
        subshell_id: str | None = None,
    ) -> Message:
        """Build a new message of *msg_type* (a reply to *parent* if given)."""
        header = {
            "msg_id": new_id(),
            "msg_type": msg_type,
            "username": self.username,
            "session": self.session_id,
            "date": datetime.now(UTC).isoformat(),
            "version": PROTOCOL_VERSION,
        }
        if subshell_id is not None:
            header["subshell_id"] = subshell_id
        return Message(
            content=dict(content or {}),
            header=header,
            parent_header=dict(parent.header) if parent is not None else {},
            metadata=dict(metadata or {}),
            idents=list(parent.idents) if parent is not None else [],
        )

    # ---- signing ----

    def sign(self, parts: Sequence[bytes]) -> bytes:
        """Return the hex HMAC of the four JSON *parts*, or ``b""`` without a key."""
        if self._auth is None:
            return b""
        h = self._auth.copy()
        for p in parts:
            h.update(p)
        return h.hexdigest().encode("ascii")

    # ---- wire ----

    def serialize(self, msg: Message) -> list[bytes]:
        """Return the multipart frames for *msg*: idents, DELIM, HMAC, four JSON parts, buffers."""
        parts = [
            _pack(msg.header),
            _pack(msg.parent_header),
            _pack(msg.metadata),
            _pack(msg.content),
        ]
        return [*msg.idents, DELIM, self.sign(parts), *parts, *(bytes(b) for b in msg.buffers)]

    def verify(self, frames: Sequence[bytes]) -> int:
        """Check the signature of one message's *frames*; return the delimiter's index.

        For readers that need only one part (the hub's status monitor decodes
        just ``content``); :meth:`deserialize` calls it too.

        :raises BadSignature: when the signature is missing, wrong or a replay.
        :raises ValueError: when the frames are not a Jupyter message.
        """
        try:
            idx = frames.index(DELIM)
        except ValueError:
            raise ValueError("not a Jupyter message: no <IDS|MSG> delimiter") from None
        if len(frames) < idx + 6:
            raise ValueError("not a Jupyter message: fewer than 5 frames after the delimiter")
        signature = frames[idx + 1]
        parts = frames[idx + 2 : idx + 6]
        if self._auth is not None:
            if not signature:
                raise BadSignature("unsigned message")
            if not hmac.compare_digest(signature, self.sign(parts)):
                raise BadSignature("invalid signature")
            digests = self._digests
            if signature in digests:
                raise BadSignature("replayed signature")
            digests[signature] = None
            if len(digests) > self.digest_history_size:
                digests.popitem(last=False)
        return idx

    def deserialize(self, frames: Sequence[bytes]) -> Message:
        """Parse the multipart *frames* of one message, checking its signature.

        A message that parses is also of the right shape (see :func:`_check_shape`):
        ``header``, ``parent_header``, ``metadata`` and ``content`` are dicts,
        ``msg_id`` and ``msg_type`` non-empty strings, the parent's ``msg_id`` a
        string or absent, and a status message's ``execution_state`` a string.
        Nothing else is raised, whatever the frames hold.

        :raises BadSignature: when the signature is missing, wrong or a replay.
        :raises ValueError: when the frames are not a Jupyter message.
        """
        idx = self.verify(frames)
        try:
            header, parent, metadata, content = _decode_parts(frames[idx + 2 : idx + 6])
        except ValueError as exc:
            raise ValueError(f"not a Jupyter message: bad JSON ({exc})") from None
        try:
            _check_shape(header, parent, content)
        except ValueError as exc:
            raise ValueError(f"not a Jupyter message: {exc}") from None
        return Message(
            content=content,
            header=header,
            parent_header=parent,
            metadata=metadata,
            idents=list(frames[:idx]),
            buffers=[memoryview(b) for b in frames[idx + 6 :]],
        )
