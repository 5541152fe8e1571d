"""CurveZMQ transport encryption: the policy, the keys in connection info, client sockets.

A kernel that declares ``supported_encryption: ["curve"]`` (ipykernel >= 7.4's
kernelspec does) reads two Z85 strings from its connection file,
``curve_publickey`` and ``curve_secretkey``, and makes its five sockets Curve
servers with them. A client needs only the server's public key
(``curve_serverkey``) and a keypair of its own; this module gives every
kernel_hub socket one ephemeral keypair per process, so the kernel's secret key
is never used on the client side (jupyter_client's clients use the file's
pair, which works the same: there is no ZAP handler, so a Curve server accepts
any client that knows its public key).

The public key is what lets a client in: it travels only where the HMAC key
travels (0600 connection files, a nanny's handshake), and messages stay signed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..contract.errors import LaunchError
from ..contract.types import check_encryption

if TYPE_CHECKING:
    from collections.abc import Mapping

    import zmq

    from ..contract.types import KernelType, LaunchRequest

__all__ = [
    "CURVE_KEYS",
    "client_keypair",
    "curve_for",
    "curve_keys",
    "has_curve",
    "is_encrypted",
    "secure_client",
    "supports_curve",
]

#: The connection-info fields of a Curve kernel (the names ipykernel and jupyter_client use).
CURVE_KEYS = ("curve_publickey", "curve_secretkey")


def supports_curve(kernel_type: KernelType) -> bool:
    """Return whether *kernel_type* declares ``supported_encryption`` with ``"curve"``.

    Read from its metadata, as jupyter_client reads a kernelspec's: a list (or a
    single string) compared without case.
    """
    declared = kernel_type.metadata.get("supported_encryption")
    if isinstance(declared, str):
        declared = [declared]
    if not isinstance(declared, list | tuple):
        return False
    return "curve" in {str(x).strip().lower() for x in declared}


def has_curve() -> bool:
    """Return whether this process's pyzmq (its libzmq) has CurveZMQ."""
    import zmq

    return bool(zmq.has("curve"))


def curve_for(kernel_type: KernelType, request: LaunchRequest | str) -> bool:
    """Decide whether a kernel of *kernel_type* gets Curve keys for *request*.

    Under its ``transport_encryption`` (or a policy given as a string): ``auto``
    when the type declares support and this pyzmq has Curve, ``required`` the same
    or an error, ``disabled`` never.

    :raises LaunchError: for ``required`` with a type (or a pyzmq) that cannot.
    """
    policy = check_encryption(request if isinstance(request, str) else request.transport_encryption)
    if policy == "disabled":
        return False
    if not supports_curve(kernel_type):
        if policy == "required":
            raise LaunchError(
                f"kernel {kernel_type.id} does not declare CurveZMQ support "
                '(supported_encryption: ["curve"] in its metadata), but transport_encryption '
                "is 'required'; use a kernel that supports it (ipykernel >= 7.4) or 'auto'"
            )
        return False
    if not has_curve():
        if policy == "required":
            raise LaunchError(
                "transport_encryption is 'required', but this pyzmq's libzmq has no CurveZMQ; "
                "install a pyzmq wheel (they bundle libsodium) or use 'auto'"
            )
        return False
    return True


def curve_keys(reuse: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Return a server keypair as connection-info fields (Z85 strings).

    :param reuse: a previous connection info: its pair is kept when it has one (a relaunch).
    """
    if reuse and all(isinstance(reuse.get(k), str | bytes) for k in CURVE_KEYS):
        return {k: _text(reuse[k]) for k in CURVE_KEYS}
    import zmq

    public, secret = zmq.curve_keypair()
    return {"curve_publickey": public.decode("ascii"), "curve_secretkey": secret.decode("ascii")}


def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def is_encrypted(info: Mapping[str, Any]) -> bool:
    """Return whether the kernel of *info* speaks Curve (its public key is there)."""
    return bool(info.get("curve_publickey"))


_client_pair: tuple[bytes, bytes] | None = None


def client_keypair() -> tuple[bytes, bytes]:
    """Return this process's client keypair (made once: a client's key identifies nothing)."""
    global _client_pair  # one pair per process, made on first use
    if _client_pair is None:
        import zmq

        _client_pair = zmq.curve_keypair()
    return _client_pair


def secure_client(sock: zmq.Socket[Any], info: Mapping[str, Any]) -> None:
    """Make *sock* a Curve client of the kernel of *info* (before it connects); plain: no-op."""
    server = info.get("curve_publickey")
    if not server:
        return
    public, secret = client_keypair()
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_serverkey = server.encode("ascii") if isinstance(server, str) else server
