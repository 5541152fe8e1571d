"""Fixtures of the docker plugin's tests: a real engine, the real test image, and a leak check."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from kernel_hub.testing import require_service

#: Built by plugins/docker/scripts/build-test-image.sh (which .ci/run calls).
TEST_IMAGE = os.environ.get("KERNEL_HUB_DOCKER_TEST_IMAGE", "kernel-hub-test/ipykernel:bookworm")


def _engine_and_image() -> tuple[bool, bool]:
    from kernel_hub_docker.engine import EngineUnavailable, get_client

    try:
        api = get_client().api
    except EngineUnavailable:
        return False, False
    try:
        api.inspect_image(TEST_IMAGE)
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
