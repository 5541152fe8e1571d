"""The Jupyter requests of a client that are one message and its reply.

:class:`KernelRequests` is mixed into :class:`~kernel_hub.AsyncKernelClient`,
which provides :meth:`~KernelRequests.request`; the blocking client wraps each
method one-to-one.

Subshells (JEP 91, ipykernel 7): :meth:`~KernelRequests.create_subshell`,
:meth:`~KernelRequests.list_subshells` and :meth:`~KernelRequests.delete_subshell`
go on the control channel, and a shell request with ``subshell_id=`` runs on that
subshell's thread, beside whatever the main shell runs. A kernel that does not
list ``"kernel subshells"`` in its ``supported_features`` would ignore the
header field and queue the request behind the main shell's work (a hang, for a
caller that meant to get past it), or never answer a ``*_subshell_request``: such
a call raises :class:`~kernel_hub.KernelHubError` at once instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

from ..contract.errors import KernelHubError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..wire.session import Message

__all__ = ["SUBSHELLS", "KernelRequests", "no_subshells"]

#: The ``supported_features`` entry of a kernel that has subshells (JEP 91).
SUBSHELLS = "kernel subshells"


def no_subshells(info: Message) -> KernelHubError:
    """Return the error for a subshell call to the kernel whose ``kernel_info_reply`` is *info*."""
    content = info.content
    name = " ".join(
        str(content[k]) for k in ("implementation", "implementation_version") if content.get(k)
    )
    features = content.get("supported_features")
    return KernelHubError(
        f"the kernel ({name or 'unnamed'}) has no subshells: its kernel_info_reply lists "
        f"supported_features {features!r}, without {SUBSHELLS!r}; run the request "
        "without subshell_id, or use a kernel that has them (ipykernel 7 or later)"
    )


class KernelRequests:
    """``kernel_info``, ``complete``, ``inspect``, ``history``, ``is_complete``, ``comm_info``.

    Also ``async with client:``, in terms of the client's own :meth:`connect`,
    :meth:`wait_for_ready` and :meth:`close`: both clients (the wire client and
    :class:`~kernel_hub.KernelClient`) mix it in.
    """

    #: How long ``async with client:`` waits in :meth:`wait_for_ready`.
    ready_timeout: float | None = 60.0
    #: The kernel's last ``kernel_info_reply`` to this client (see :meth:`supported_features`).
    _kernel_info: Message | None = None

    async def connect(self) -> Any:
        """Open the channels (implemented by the client)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close the channels (implemented by the client)."""
        raise NotImplementedError

    async def wait_for_ready(self, timeout: float | None = 60.0) -> Message:
        """Wait until the kernel answers (implemented by the client)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        """Connect and wait until the kernel answers and IOPub delivers (so no output is lost)."""
        await self.connect()
        try:
            await self.wait_for_ready(self.ready_timeout)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(
        self,
        msg_type: str,
        content: Mapping[str, Any] | None = None,
        *,
        channel: str = "shell",
        timeout: float | None = None,
        subshell_id: str | None = None,
    ) -> Message:
        """Send one request and return its reply (implemented by the client)."""
        raise NotImplementedError

    async def kernel_info(
        self, *, subshell_id: str | None = None, timeout: float | None = None
    ) -> Message:
        """Return the ``kernel_info_reply`` (and remember it for :meth:`supported_features`)."""
        reply = await self.request("kernel_info_request", timeout=timeout, subshell_id=subshell_id)
        self._kernel_info = reply
        return reply

    # ---- subshells (JEP 91) ----

    async def supported_features(self, *, timeout: float | None = None) -> frozenset[str]:
        """Return the ``supported_features`` of the kernel's ``kernel_info_reply``.

        The reply this client last received (every ``async with client:`` gets
        one) is used; only a client that has none asks the kernel.
        """
        reply = self._kernel_info or await self.kernel_info(timeout=timeout)
        features = reply.content.get("supported_features")
        if not isinstance(features, list):
            return frozenset()
        return frozenset(f for f in features if isinstance(f, str))

    async def require_subshells(self, *, timeout: float | None = None) -> None:
        """Raise :class:`~kernel_hub.KernelHubError` unless the kernel has subshells."""
        if SUBSHELLS not in await self.supported_features(timeout=timeout):
            assert self._kernel_info is not None  # supported_features fetched it
            raise no_subshells(self._kernel_info)

    async def _subshell_request(
        self, msg_type: str, content: Mapping[str, Any], timeout: float | None
    ) -> Message:
        await self.require_subshells(timeout=timeout)
        reply = await self.request(msg_type, content, channel="control", timeout=timeout)
        if reply.content.get("status", "ok") != "ok":
            why = reply.content.get("evalue") or reply.content.get("ename") or "no reason given"
            raise KernelHubError(f"the kernel refused {msg_type}: {why}")
        return reply

    async def create_subshell(self, *, timeout: float | None = None) -> str:
        """Create a subshell in the kernel and return its ``subshell_id``.

        Pass it as ``subshell_id=`` to :meth:`execute` (and the other shell
        requests): they run on the subshell's own thread, concurrently with the
        main shell and with other subshells. Subshells end with the kernel's
        process (a restart has none).

        :raises KernelHubError: when the kernel has no subshells (at once), or
            refuses the request.
        """
        reply = await self._subshell_request("create_subshell_request", {}, timeout)
        subshell_id = reply.content.get("subshell_id")
        if not isinstance(subshell_id, str) or not subshell_id:
            raise KernelHubError(
                f"the kernel's create_subshell_reply has no subshell_id ({reply.content!r:.200})"
            )
        return subshell_id

    async def list_subshells(self, *, timeout: float | None = None) -> list[str]:
        """Return the ids of the kernel's subshells (the main shell is not one).

        :raises KernelHubError: when the kernel has no subshells (at once).
        """
        reply = await self._subshell_request("list_subshell_request", {}, timeout)
        ids = reply.content.get("subshell_id")
        return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []

    async def delete_subshell(self, subshell_id: str, *, timeout: float | None = None) -> None:
        """Delete the subshell *subshell_id* (its thread ends; requests to it are refused).

        :raises KernelHubError: when the kernel has no subshells (at once), or has
            no subshell of that id.
        """
        await self._subshell_request(
            "delete_subshell_request", {"subshell_id": subshell_id}, timeout
        )

    # ---- the other shell requests ----

    async def complete(
        self,
        code: str,
        cursor_pos: int | None = None,
        *,
        subshell_id: str | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Return completions at *cursor_pos* (default: end of *code*)."""
        pos = len(code) if cursor_pos is None else cursor_pos
        return await self.request(
            "complete_request",
            {"code": code, "cursor_pos": pos},
            timeout=timeout,
            subshell_id=subshell_id,
        )

    async def inspect(
        self,
        code: str,
        cursor_pos: int | None = None,
        detail_level: int = 0,
        *,
        subshell_id: str | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Return introspection of the object at *cursor_pos* (default: end of *code*)."""
        pos = len(code) if cursor_pos is None else cursor_pos
        content = {"code": code, "cursor_pos": pos, "detail_level": detail_level}
        return await self.request(
            "inspect_request", content, timeout=timeout, subshell_id=subshell_id
        )

    async def history(
        self,
        *,
        raw: bool = True,
        output: bool = False,
        hist_access_type: str = "tail",
        n: int = 10,
        subshell_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Message:
        """Return the kernel's history (``tail`` of *n* entries by default)."""
        content = {
            "raw": raw,
            "output": output,
            "hist_access_type": hist_access_type,
            "n": n,
            **kwargs,
        }
        return await self.request(
            "history_request", content, timeout=timeout, subshell_id=subshell_id
        )

    async def is_complete(
        self, code: str, *, subshell_id: str | None = None, timeout: float | None = None
    ) -> Message:
        """Return whether *code* is a complete statement (``is_complete_reply``)."""
        return await self.request(
            "is_complete_request", {"code": code}, timeout=timeout, subshell_id=subshell_id
        )

    async def comm_info(
        self,
        target_name: str | None = None,
        *,
        subshell_id: str | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Return the kernel's open comms (of *target_name* only, if given)."""
        content = {} if target_name is None else {"target_name": target_name}
        return await self.request(
            "comm_info_request", content, timeout=timeout, subshell_id=subshell_id
        )
