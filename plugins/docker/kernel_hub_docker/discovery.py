"""Find the docker kernel types: config tables plus labelled local images, without hanging.

When the engine does not answer within the ping timeout, no docker type is
offered and one warning says how to start the engine: ``kernel-hub list``
keeps working for every other provider. A local engine is asked over its
unix socket with the standard library (:mod:`.probe`), so discovery never
imports docker-py; two images that declare the same type name are reported,
and the newest wins.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .engine import PING_TIMEOUT, EngineUnavailable, engine_address, engine_help
from .images import IMAGE_LABEL, SCHEMA, types_from_images
from .probe import EngineSilent, get_json, local_socket

if TYPE_CHECKING:
    from kernel_hub.provider import HubContext, KernelType

__all__ = ["engine_answers", "find_docker_types", "list_labelled_images"]

log = logging.getLogger("kernel_hub.docker")


def list_labelled_images(*, ping_timeout: float = PING_TIMEOUT) -> list[tuple[str, dict[str, str]]]:
    """Return ``(reference, labels)`` of every local image carrying :data:`IMAGE_LABEL`.

    Blocking. Newest image first. The reference is the image's first tag, or
    its id when untagged.

    :raises EngineUnavailable: when the engine does not answer.
    """
    images = _engine_images(ping_timeout)
    images.sort(key=lambda image: image.get("Created") or 0, reverse=True)
    out = []
    for image in images:
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        out.append((tags[0] if tags else image["Id"], dict(image.get("Labels") or {})))
    return out


def _engine_images(ping_timeout: float) -> list[dict[str, Any]]:
    """Return the engine's labelled images (its ``/images/json`` objects)."""
    path = local_socket()
    if path is None:  # a tcp:// or ssh:// engine: docker-py knows its TLS and SSH settings
        from .engine import engine_errors, get_client

        client = get_client(ping_timeout=ping_timeout)
        with engine_errors():
            return list(client.api.images(filters={"label": IMAGE_LABEL}))
    try:
        found = get_json(
            "/images/json",
            sock_path=path,
            timeout=ping_timeout,
            query={"filters": {"label": [IMAGE_LABEL]}},
        )
    except EngineSilent as exc:
        raise EngineUnavailable(
            f"the Docker engine at {engine_address()} is not reachable ({exc}). " + engine_help()
        ) from None
    return list(found)


def engine_answers(*, ping_timeout: float = PING_TIMEOUT) -> None:
    """Return when the engine answers a ping; blocking, standard library only for a local one.

    :raises EngineUnavailable: when it does not.
    """
    path = local_socket()
    if path is None:
        from .engine import get_client

        get_client(ping_timeout=ping_timeout)
        return
    try:
        get_json("/_ping", sock_path=path, timeout=ping_timeout)
    except EngineSilent as exc:
        raise EngineUnavailable(
            f"the Docker engine at {engine_address()} is not reachable ({exc}). " + engine_help()
        ) from None


async def find_docker_types(hub: HubContext | None) -> list[KernelType]:
    """Return the configured and the label-discovered docker kernel types.

    A configured type wins over a discovered one of the same name. Runs
    docker-py in a thread; the engine check takes at most ``ping_timeout``
    seconds (``[docker] ping_timeout``, default 3). A bad setting keeps its
    default and a bad table is left out, each with one warning (:data:`SCHEMA`).
    """
    config = SCHEMA.load(hub) if hub is not None else SCHEMA.parse({})
    ping_timeout = float(config.settings.ping_timeout)  # the file may give an int
    discover = config.settings.discover_labels
    try:
        if discover:
            images = await asyncio.to_thread(list_labelled_images, ping_timeout=ping_timeout)
        else:
            await asyncio.to_thread(engine_answers, ping_timeout=ping_timeout)
            images = []
    except EngineUnavailable as exc:
        log.warning("docker kernel types are left out: %s", exc)
        return []
    except Exception as exc:  # noqa: BLE001 - an engine error must not break listing
        log.warning("docker kernel types are left out: listing images failed: %r", exc)
        return []
    found: dict[str, KernelType] = {}
    configured = [table.kernel_type() for table in config.types.values()]
    for kt in [*configured, *types_from_images(images)]:
        if kt.id in found:
            log.debug("%s from %s is shadowed", kt.id, kt.metadata["docker"]["source"])
            continue
        found[kt.id] = kt
    return sorted(found.values(), key=lambda kt: kt.id)
