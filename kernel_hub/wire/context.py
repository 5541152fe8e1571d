"""kernel_hub's ZeroMQ context: one per process, with a socket limit fit for many kernels.

Not ``zmq.Context.instance()``: libzmq fixes a context's socket limit (1,023 by
default) when the context's first socket is made, and setting it later is silently
ignored. A hub holding hundreds of kernels has one IOPub socket per kernel (its
activity monitor) and four more per connected client, so the 1,024th socket of a
shared context would fail with "Too many open files" whatever ``ulimit -n`` says.
This context's limit is raised before its first socket, to the process's open-file
limit (which bounds it anyway: every socket holds at least one fd).
"""

from __future__ import annotations

import os
import resource
import threading
from typing import Any

import zmq

__all__ = ["hub_context"]

_lock = threading.Lock()
_context: zmq.Context[Any] | None = None
_owner = 0


def socket_limit(ceiling: int) -> int:
    """Return the socket limit for a new context: ``ulimit -n``, within 1,023..*ceiling*."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return ceiling
    return max(1023, min(int(soft), ceiling))


def hub_context() -> zmq.Context[Any]:
    """Return this process's kernel_hub context, made on first use (and anew after a fork)."""
    global _context, _owner
    with _lock:
        if _context is None or _owner != os.getpid() or _context.closed:
            ctx: zmq.Context[Any] = zmq.Context()
            # Before the first socket: libzmq ignores the option afterwards.
            ctx.max_sockets = socket_limit(int(ctx.get(zmq.SOCKET_LIMIT)))
            _context, _owner = ctx, os.getpid()
        return _context
