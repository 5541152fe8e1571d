"""The ``argv`` fallback: serve a frontend's connection file and relay it to a kernel_hub kernel.

Tools that ignore kernel provisioners (VS Code, jupyter_client < 7) run a
kernelspec's ``argv`` and expect a kernel on the ports and key of the
connection file they wrote. The bridge's kernelspecs name this module there::

    python -m kernel_hub_jupyter.relay --type docker/py311 -f {connection_file}

It binds the frontend's five ports on its IP, launches the type through
kernel_hub (which picks the kernel's own ports and key), and forwards every
message both ways: shell, control and stdin through ROUTER/DEALER pairs
(stdin and shell share one identity towards the kernel, so ``input()``
works), IOPub from a SUB to a PUB, heartbeats as raw frames. Towards a
CurveZMQ kernel it is a Curve client; towards a frontend whose file has Curve
keys, a Curve server with them. Messages are
checked against the frontend's key and signed again with the kernel's; a
message with a bad signature is dropped and logged.

Signals: SIGINT (the frontend's interrupt) becomes the kernel manager's
``interrupt()``; SIGTERM and SIGHUP shut the kernel down and end the relay;
the relay also ends when the kernel ends (after a ``shutdown_request``) and
when the process that started it (``JPY_PARENT_PID``) is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    import zmq.asyncio

    from kernel_hub import KernelHub, RunningKernel

__all__ = ["Resigner", "bind_frontend", "main", "relay"]

log = logging.getLogger("kernel_hub_jupyter.relay")

DELIM = b"<IDS|MSG>"
#: Channel name → (frontend socket type, kernel-side socket type), as names of zmq constants.
_PAIRS = {
    "shell": ("ROUTER", "DEALER"),
    "control": ("ROUTER", "DEALER"),
    "stdin": ("ROUTER", "DEALER"),
    "iopub": ("PUB", "SUB"),
    "hb": ("ROUTER", "DEALER"),
}


class Resigner:
    """Check a message's HMAC with one key and sign it again with another.

    :param check_key: the key of the side the message comes from (``b""``: unsigned).
    :param sign_key: the key of the side it goes to.
    :param scheme: ``hmac-sha256`` and the like, from the connection info.
    """

    def __init__(self, check_key: bytes, sign_key: bytes, scheme: str = "hmac-sha256") -> None:
        from kernel_hub.provider import Session

        # The core's wire format: one signing and checking code for every key. The check
        # side also refuses a replayed signature, as the kernel would.
        self._check = Session(check_key, scheme)
        self._sign = Session(sign_key, scheme)
        self.dropped = 0

    def __repr__(self) -> str:
        return f"<Resigner dropped={self.dropped}>"

    def __call__(self, frames: list[bytes]) -> list[bytes] | None:
        """Return *frames* signed with the sign key, or ``None`` if its signature is wrong."""
        try:
            i = self._check.verify(frames)
        except ValueError:  # not a Jupyter message, or BadSignature
            self.dropped += 1
            log.warning("relay: dropped a message with a bad signature (%d so far)", self.dropped)
            return None
        return [*frames[: i + 1], self._sign.sign(frames[i + 2 : i + 6]), *frames[i + 2 :]]


def _read_connection_file(path: str) -> dict[str, Any]:
    with open(path) as f:
        info: dict[str, Any] = json.load(f)
    return info


def bind_frontend(
    frontend: dict[str, Any],
) -> tuple[zmq.asyncio.Context, dict[str, zmq.asyncio.Socket]]:
    """Bind the five ports of the *frontend*'s connection file; return the context and sockets.

    :func:`_main` does this before it launches the kernel: the tool's sockets
    connect (they retry until the ports are bound) while the kernel starts, so
    its IOPub subscription is in place when the kernel first answers. Bound
    only afterwards, a tool that runs code as soon as ``kernel_info`` is
    answered, without waiting for IOPub as jupyter_client's ``wait_for_ready``
    does (``jupyter console``), could lose that code's output to a
    subscription still on its way.
    """
    import zmq
    import zmq.asyncio

    ctx = zmq.asyncio.Context()
    sockets: dict[str, zmq.asyncio.Socket] = {}
    try:
        for channel, (ftype, _btype) in _PAIRS.items():
            fsock = sockets[channel] = ctx.socket(getattr(zmq, ftype))
            fsock.linger = 0
            if frontend.get("curve_secretkey"):  # a frontend that made Curve keys: serve them
                fsock.curve_secretkey = str(frontend["curve_secretkey"]).encode("ascii")
                fsock.curve_publickey = str(frontend["curve_publickey"]).encode("ascii")
                fsock.curve_server = True
            url = f"{frontend.get('transport', 'tcp')}://{frontend['ip']}"
            fsock.bind(f"{url}:{frontend[f'{channel}_port']}")
    except BaseException:
        _close(ctx, sockets.values())
        raise
    return ctx, sockets


def _close(ctx: zmq.asyncio.Context, sockets: Iterable[zmq.asyncio.Socket]) -> None:
    for sock in sockets:
        sock.close(linger=0)
    ctx.term()


async def relay(
    hub: KernelHub,
    kernel: RunningKernel,
    frontend: dict[str, Any],
    *,
    stop: asyncio.Event,
    bound: tuple[zmq.asyncio.Context, dict[str, zmq.asyncio.Socket]] | None = None,
) -> None:
    """Forward messages between the *frontend*'s ports and *kernel* until *stop* is set.

    :param frontend: the connection info of the file the frontend wrote.
    :param bound: what :func:`bind_frontend` returned for it (bound here if ``None``);
        closed at the end either way.
    """
    import zmq
    import zmq.asyncio

    from kernel_hub.provider import secure_client

    ctx, fsockets = bound if bound is not None else bind_frontend(frontend)
    backend = kernel.connection_info
    scheme = frontend.get("signature_scheme", "hmac-sha256")
    fkey = frontend.get("key", "").encode()
    bkey = str(backend.get("key", "")).encode()
    up = Resigner(fkey, bkey, scheme)  # frontend → kernel
    down = Resigner(bkey, fkey, scheme)  # kernel → frontend
    identity = os.urandom(16).hex().encode()  # shell and stdin share it towards the kernel
    sockets: list[zmq.asyncio.Socket] = list(fsockets.values())
    routes: dict[zmq.asyncio.Socket, tuple[zmq.asyncio.Socket, Callable[..., Any] | None]] = {}
    try:
        for channel, (_ftype, btype) in _PAIRS.items():
            fsock = fsockets[channel]
            bsock = ctx.socket(getattr(zmq, btype))
            bsock.linger = 0
            if btype == "DEALER" and channel in ("shell", "stdin"):
                bsock.setsockopt(zmq.IDENTITY, identity)
            if btype == "SUB":
                bsock.setsockopt(zmq.SUBSCRIBE, b"")
            secure_client(bsock, backend)  # a Curve kernel: the relay is one of its clients
            burl = f"{backend.get('transport', 'tcp')}://{backend['ip']}"
            bsock.connect(f"{burl}:{backend[f'{channel}_port']}")
            sockets.append(bsock)
            signed = channel != "hb"
            routes[fsock] = (bsock, up if signed else None)
            routes[bsock] = (fsock, down if signed else None)
        poller = zmq.asyncio.Poller()
        for sock in routes:
            if sock.socket_type != zmq.PUB:
                poller.register(sock, zmq.POLLIN)
        stopped = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                polled = asyncio.ensure_future(poller.poll())
                await asyncio.wait({polled, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not polled.done():
                    polled.cancel()
                    break
                for sock, _ in polled.result():
                    target, resign = routes[sock]
                    while True:
                        try:
                            frames = await sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        out = resign(frames) if resign is not None else frames
                        if out is not None:
                            await target.send_multipart(out)
        finally:
            stopped.cancel()
    finally:
        _close(ctx, sockets)


def _watch_parent(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Set *stop* when ``JPY_PARENT_PID`` ends (a pidfd: woken, not polled)."""
    pid = os.environ.get("JPY_PARENT_PID")
    if not pid or not pid.isdigit():
        return
    try:
        fd = os.pidfd_open(int(pid))
    except OSError:
        stop.set()  # already gone
        return

    def gone() -> None:
        log.info("relay: the frontend process %s is gone; shutting the kernel down", pid)
        loop.remove_reader(fd)
        os.close(fd)
        stop.set()

    loop.add_reader(fd, gone)


async def _main(type_id: str, connection_file: str) -> int:
    from kernel_hub import KernelHub, KernelHubError

    frontend = _read_connection_file(connection_file)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    interrupts: asyncio.Queue[None] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGINT, interrupts.put_nowait, None)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    _watch_parent(loop, stop)
    bound = bind_frontend(frontend)  # before the launch: see bind_frontend
    async with KernelHub() as hub:
        try:
            kernel = await hub.launch(type_id, restart=False)
        except BaseException as exc:
            _close(bound[0], bound[1].values())
            if not isinstance(exc, KernelHubError):
                raise
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"kernel_hub_jupyter.relay: cannot start {type_id}: {first}", file=sys.stderr)
            return 1

        async def interrupter() -> None:
            while True:
                await interrupts.get()
                with contextlib.suppress(Exception):
                    await kernel.manager.interrupt()

        async def ended() -> None:
            await kernel.wait()
            stop.set()

        helpers = [asyncio.ensure_future(interrupter()), asyncio.ensure_future(ended())]
        try:
            await relay(hub, kernel, frontend, stop=stop, bound=bound)
        finally:
            for task in helpers:
                task.cancel()
            await kernel.shutdown(timeout=5.0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the relay: ``python -m kernel_hub_jupyter.relay --type ID -f CONNECTION_FILE``."""
    p = argparse.ArgumentParser(
        prog="python -m kernel_hub_jupyter.relay",
        description="Serve a Jupyter connection file and relay it to a kernel_hub kernel.",
    )
    p.add_argument("--type", required=True, dest="type_id", help="kernel_hub type id")
    p.add_argument("-f", required=True, dest="connection_file", help="the frontend's file")
    # Extra kernel arguments (``jupyter run`` passes its files) have no meaning for a
    # kernel_hub type, whose command line is its provider's: they are ignored.
    args, _ignored = p.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return asyncio.run(_main(args.type_id, args.connection_file))


if __name__ == "__main__":
    sys.exit(main())
