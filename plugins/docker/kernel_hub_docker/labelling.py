"""Make an existing image a kernel type: add the ``org.kernel-hub.kernel`` label to it.

An image's labels cannot be changed in place; a new image is built ``FROM`` the
old one with one ``LABEL`` instruction (no layer, nothing downloaded), and the
tag is moved to it (or a new tag given).

Whether the image's kernel speaks CurveZMQ is declared in the label (a
kernelspec's ``metadata.supported_encryption``); when the user does not say,
:func:`ipykernel_version` asks the image itself, in a throwaway container with
no network.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import ConfigError

from .engine import engine_errors, get_client
from .images import DEFAULT_ARGV, IMAGE_LABEL, types_from_images

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["CURVE_SINCE", "ipykernel_version", "label_image", "label_value", "require_image"]

#: The first ipykernel whose kernels speak CurveZMQ (its kernelspec declares it).
CURVE_SINCE = (7, 4)

# Run inside the image: ipykernel's version from its installed metadata, nothing imported.
_VERSION_PROBE = (
    "import importlib.metadata as m\n"
    "try:\n    print(m.version('ipykernel'))\n"
    "except m.PackageNotFoundError:\n    print('none')\n"
)


def label_value(
    *,
    name: str | None = None,
    display_name: str | None = None,
    language: str | None = None,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    supported_encryption: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Return the label's JSON object with the given fields (the rest take their defaults).

    :param supported_encryption: ``["curve"]`` for an image whose kernel speaks
        CurveZMQ; it goes where a kernelspec has it, under ``metadata``.
    """
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
    if supported_encryption:
        data["metadata"] = {"supported_encryption": list(supported_encryption)}
    return data


def require_image(image: str) -> None:
    """Return when the engine has *image*; blocking.

    :raises ConfigError: naming the image and what to do, when it is not there.
    :raises EngineUnavailable: when the engine does not answer.
    """
    from docker.errors import ImageNotFound

    with engine_errors():
        try:
            get_client().api.inspect_image(image)
        except ImageNotFound:
            raise ConfigError(
                f"the Docker image {image!r} is not present on the engine ('docker images' "
                "lists those it has); build it or 'docker pull' it first"
            ) from None


def ipykernel_version(
    image: str, *, python: str = DEFAULT_ARGV[0], timeout: int = 60
) -> tuple[str, tuple[int, ...]] | str:
    """Ask *image* which ipykernel its *python* has.

    Blocking (docker-py): one container with no network and the image's
    entrypoint replaced by *python*, removed afterwards.

    :returns: ``(version text, version tuple)``, or a one-line reason why the
        image could not tell (no such interpreter, no ipykernel, no answer).
    :raises EngineUnavailable: when the engine does not answer.
    """
    from docker.errors import DockerException

    api = get_client().api
    with engine_errors():
        cid = api.create_container(
            image,
            command=["-c", _VERSION_PROBE],
            entrypoint=[python],
            labels={"org.kernel-hub.probe": "ipykernel-version"},
            host_config=api.create_host_config(network_mode="none"),
        )["Id"]
        try:
            try:
                api.start(cid)
                status = api.wait(cid, timeout=timeout).get("StatusCode")
            except DockerException as exc:
                why = str(getattr(exc, "explanation", None) or exc)
                return f"{python} did not run in it ({why})"
            except Exception:  # noqa: BLE001 - a read timeout of the wait
                return f"{python} gave no answer within {timeout:g} s"
            out = api.logs(cid, stdout=True, stderr=False).decode(errors="replace").strip()
        finally:
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)
    if status != 0 or not out:
        return f"{python} exited with status {status}"
    if out == "none":
        return f"its {python} has no ipykernel"
    parts = []
    for piece in out.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return (out, tuple(parts)) if parts else f"its ipykernel reports the version {out!r}"


def label_image(image: str, data: Mapping[str, Any], *, tag: str | None = None) -> str:
    """Label *image* as a kernel type; return the reference of the labelled image.

    Blocking (docker-py). The label is validated first, as discovery would read it.

    :param tag: the new image's tag (default: *image* itself, so the tag moves).
    :raises ConfigError: when the label would not make a kernel type.
    :raises EngineUnavailable: when the engine does not answer.
    """
    value = json.dumps(dict(data))
    ref = tag or image
    require_image(image)
    if not types_from_images([(ref, {IMAGE_LABEL: value})]):
        raise ConfigError(f"the label {value} does not make a kernel type (see the warning above)")
    # A double-quoted Dockerfile string takes JSON's own escapes, so any value survives.
    dockerfile = f"FROM {image}\nLABEL {IMAGE_LABEL}={json.dumps(value)}\n"
    client = get_client()
    with engine_errors():
        built, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)
    del built  # the engine streamed the build; the tag is what matters
    return ref
