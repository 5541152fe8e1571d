"""Find the docker kernel types: config tables plus labelled local images, without hanging.

When the engine does not answer within the ping timeout, no docker type is
offered and one warning says how to start the engine: ``kernel-hub list``
keeps working for every other provider.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .engine import PING_TIMEOUT, EngineUnavailable, engine_errors, get_client
from .images import IMAGE_LABEL, types_from_config, types_from_images

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kernel_hub.provider import HubContext, KernelType

__all__ = ["find_docker_types", "list_labelled_images"]

log = logging.getLogger("kernel_hub.docker")


def list_labelled_images(*, ping_timeout: float = PING_TIMEOUT) -> list[tuple[str, dict[str, str]]]:
    """Return ``(reference, labels)`` of every local image carrying :data:`IMAGE_LABEL`.

    Blocking. The reference is the image's first tag, or its id when untagged.

    :raises EngineUnavailable: when the engine does not answer.
    """
    client = get_client(ping_timeout=ping_timeout)
    with engine_errors():
        images = client.api.images(filters={"label": IMAGE_LABEL})
    out = []
    for image in images:
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        out.append((tags[0] if tags else image["Id"], dict(image.get("Labels") or {})))
    return out


async def find_docker_types(hub: HubContext | None) -> list[KernelType]:
    """Return the configured and the label-discovered docker kernel types.

    A configured type wins over a discovered one of the same name. Runs
    docker-py in a thread; the engine check takes at most ``ping_timeout``
    seconds (``[docker] ping_timeout``, default 3).
    """
    config: Mapping[str, Any] = hub.config_for("docker") if hub is not None else {}
    ping_timeout = float(config.get("ping_timeout", PING_TIMEOUT))
    discover = bool(config.get("discover_labels", True))
    try:
        if discover:
            images = await asyncio.to_thread(list_labelled_images, ping_timeout=ping_timeout)
        else:
            await asyncio.to_thread(get_client, ping_timeout=ping_timeout)
            images = []
    except EngineUnavailable as exc:
        log.warning("docker kernel types are left out: %s", exc)
        return []
    except Exception as exc:  # noqa: BLE001 - an engine error must not break listing
        log.warning("docker kernel types are left out: listing images failed: %r", exc)
        return []
    found: dict[str, KernelType] = {}
    for kt in [*types_from_config(config), *types_from_images(images)]:
        if kt.id in found:
            log.debug("%s from %s is shadowed", kt.id, kt.metadata["docker"]["source"])
            continue
        found[kt.id] = kt
    return sorted(found.values(), key=lambda kt: kt.id)
