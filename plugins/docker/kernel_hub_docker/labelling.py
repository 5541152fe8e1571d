"""Make an existing image a kernel type: add the ``org.kernel-hub.kernel`` label to it.

An image's labels cannot be changed in place; a new image is built ``FROM`` the
old one with one ``LABEL`` instruction (no layer, nothing downloaded), and the
tag is moved to it (or a new tag given).
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import ConfigError

from .engine import engine_errors, get_client
from .images import IMAGE_LABEL, types_from_images

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["label_image", "label_value"]


def label_value(
    *,
    name: str | None = None,
    display_name: str | None = None,
    language: str | None = None,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Return the label's JSON object with the given fields (the rest take their defaults)."""
    data: dict[str, Any] = {}
    for key, value in (
        ("name", name),
        ("display_name", display_name),
        ("language", language),
        ("argv", list(argv) if argv else None),
        ("env", dict(env) if env else None),
    ):
        if value:
            data[key] = value
    return data


def label_image(image: str, data: Mapping[str, Any], *, tag: str | None = None) -> str:
    """Label *image* as a kernel type; return the reference of the labelled image.

    Blocking (docker-py). The label is validated first, as discovery would read it.

    :param tag: the new image's tag (default: *image* itself, so the tag moves).
    :raises ConfigError: when the label would not make a kernel type.
    :raises EngineUnavailable: when the engine does not answer.
    """
    value = json.dumps(dict(data))
    ref = tag or image
    if not types_from_images([(ref, {IMAGE_LABEL: value})]):
        raise ConfigError(f"the label {value} does not make a kernel type (see the warning above)")
    # A double-quoted Dockerfile string takes JSON's own escapes, so any value survives.
    dockerfile = f"FROM {image}\nLABEL {IMAGE_LABEL}={json.dumps(value)}\n"
    client = get_client()
    with engine_errors():
        built, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)
    del built  # the engine streamed the build; the tag is what matters
    return ref
