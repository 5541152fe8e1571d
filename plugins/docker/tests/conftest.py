"""Fixtures of the docker plugin's tests: a real engine, the real test image, and a leak check."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kernel_hub.testing import require_service

#: Built by plugins/docker/scripts/build-test-image.sh (which .ci/run calls).
TEST_IMAGE = os.environ.get("KERNEL_HUB_DOCKER_TEST_IMAGE", "kernel-hub-test/ipykernel:bookworm")
#: The same with ipykernel 7 (CurveZMQ), built by plugins/docker/scripts/build-curve-test-image.sh.
CURVE_IMAGE = os.environ.get(
    "KERNEL_HUB_DOCKER_CURVE_IMAGE", "kernel-hub-test/ipykernel:bookworm-curve"
)


def _engine_and_image(image: str = TEST_IMAGE) -> tuple[bool, bool]:
    from kernel_hub_docker.engine import EngineUnavailable, get_client

    try:
        api = get_client().api
    except EngineUnavailable:
        return False, False
    try:
        api.inspect_image(image)
    except Exception:
        return True, False
    return True, True


@pytest.fixture(scope="session")
def docker_image() -> Iterator[str]:
    """The test kernel image's tag, once the engine answers and the image exists.

    At session end no kernel container made during the session may remain if it belongs
    to this process or to a dead owner (a CLI subprocess of a test). Containers that were
    there before (the user's kernels, their orphans) are not looked at.
    """
    engine, image = _engine_and_image()
    require_service(
        "dockerd",
        engine,
        "start it with 'dockerd > /tmp/dockerd.log 2>&1 &' and wait until 'docker info' "
        "answers (.ci/run does this), or set DOCKER_HOST",
    )
    require_service(
        f"the Docker image {TEST_IMAGE}",
        image,
        "build it with plugins/docker/scripts/build-test-image.sh (.ci/run does this)",
    )
    from kernel_hub_docker import kernel_containers

    before = {c.id for c in kernel_containers()}
    yield TEST_IMAGE
    left = [
        c
        for c in kernel_containers()
        if c.id not in before and (c.owner_state == "dead" or c.owner.endswith(f":{os.getpid()}"))
    ]
    assert not left, "kernel containers outlived the test session:\n" + "\n".join(map(str, left))


@pytest.fixture(scope="session")
def curve_image(docker_image: str) -> str:
    """The CurveZMQ test kernel image's tag (ipykernel 7), once it exists.

    Its label declares ``supported_encryption: ["curve"]`` and names the type
    ``docker/bookworm-curve``. Depends on ``docker_image`` for the engine check and
    the leak check at session end.
    """
    require_service(
        f"the Docker image {CURVE_IMAGE}",
        _engine_and_image(CURVE_IMAGE)[1],
        "build it with plugins/docker/scripts/build-curve-test-image.sh (.ci/run does this)",
    )
    return CURVE_IMAGE
