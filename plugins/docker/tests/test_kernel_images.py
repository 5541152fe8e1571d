"""Making a kernel image as plugins/docker/README.md says: a Dockerfile, or ``docker label``.

Built against a real engine (issue 16, item 10). No registry is reachable here,
so the README's Dockerfile is built ``FROM`` the locally built test image, with
its ``pip install ipykernel`` line replaced by a check that ipykernel is there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kernel_hub_docker.images import types_from_images

pytestmark = [pytest.mark.docker]

README = Path(__file__).resolve().parents[1] / "README.md"
CLI = [sys.executable, "-m", "kernel_hub"]


def readme_dockerfile() -> str:
    match = re.search(
        r"^`Dockerfile`:\n\n```dockerfile\n(.*?)^```$", README.read_text(), re.M | re.S
    )
    assert match, "plugins/docker/README.md lost its Dockerfile"
    return match.group(1)


def cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERNEL_HUB_CONFIG": str(config)}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture
def names(tmp_path):
    """Unique type name and image tags; every image made under them is removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    made = {
        "name": f"khdoc{suffix}",
        "built": f"kh-doc-test/{suffix}:built",
        "labelled": f"kh-doc-test/{suffix}:labelled",
    }
    yield made
    for tag in (made["built"], made["labelled"]):
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)


def test_readme_dockerfile_and_docker_label_make_kernel_types(
    docker_image, curve_image, names, tmp_path
):
    text = readme_dockerfile()
    pip = 'pip install --no-cache-dir "ipykernel>=7.4"'
    assert text.startswith("FROM python:") and pip in text
    # The Curve image has ipykernel 7.4 already: the RUN line checks that instead.
    offline = text.replace(text.splitlines()[0], f"FROM {curve_image}")
    offline = offline.replace(
        pip, """python3 -c 'import sys, ipykernel; sys.exit(ipykernel.version_info < (7, 4))'"""
    )
    offline = offline.replace('"name": "py312"', f'"name": "{names["name"]}"')
    (tmp_path / "Dockerfile").write_text(offline)
    config = tmp_path / "kh.toml"
    config.write_text("")
    subprocess.run(
        ["docker", "build", "-q", "-t", names["built"], str(tmp_path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    type_id = f"docker/{names['name']}"

    listed = cli("list", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    (kt,) = [t for t in json.loads(listed.stdout) if t["id"] == type_id]
    assert kt["display_name"] == "Python 3.12 (Docker)"  # from the README's label
    assert kt["metadata"]["supported_encryption"] == ["curve"]  # its kernels are encrypted
    ran = cli("run", type_id, "-c", "print(6*7)", config=config)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "42\n"

    # The same name from a second, newer image: a warning naming both, and the newer wins.
    labelled = cli(
        "docker", "label", docker_image, "--name", names["name"], "--display-name", "relabelled",
        "-t", names["labelled"], config=config,
    )  # fmt: skip
    assert labelled.returncode == 0, labelled.stderr
    assert f"{names['labelled']} is the kernel type {type_id}" in labelled.stdout
    # It asked the image: Debian's ipykernel 6.17 has no CurveZMQ, so nothing is declared.
    assert "ipykernel 6.17" in labelled.stdout and "has no CurveZMQ" in labelled.stdout
    listed = cli("list", "--json", config=config)
    (kt,) = [t for t in json.loads(listed.stdout) if t["id"] == type_id]
    assert kt["display_name"] == "relabelled"
    assert "supported_encryption" not in kt["metadata"]
    assert kt["metadata"]["docker"]["image"] == names["labelled"]
    (warning,) = [line for line in listed.stderr.splitlines() if type_id in line]
    assert names["built"] in warning and names["labelled"] in warning
    assert f"{names['labelled']} wins" in warning


def test_the_first_of_two_images_with_one_name_wins_with_a_warning(caplog):
    label = {"org.kernel-hub.kernel": json.dumps({"name": "same"})}
    (kt,) = types_from_images([("new:1", label), ("old:1", label)])
    assert kt.metadata["docker"]["image"] == "new:1"
    assert (
        "images new:1 and old:1 both offer the kernel type docker/same; new:1 wins" in caplog.text
    )


def label_of_image(tag: str) -> dict:
    from kernel_hub_docker.engine import get_client
    from kernel_hub_docker.images import IMAGE_LABEL

    return json.loads(get_client().api.inspect_image(tag)["Config"]["Labels"][IMAGE_LABEL])


def test_docker_label_declares_curve_for_an_image_with_ipykernel_7_4(curve_image, names, tmp_path):
    """Issue 24: asked (one throwaway container), or told with --supported-encryption."""
    config = tmp_path / "kh.toml"
    config.write_text("")
    asked = cli("docker", "label", curve_image, "--name", names["name"], "-t", names["built"],
                config=config)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    assert "ipykernel 7.4" in asked.stdout and "CurveZMQ declared" in asked.stdout
    assert label_of_image(names["built"])["metadata"] == {"supported_encryption": ["curve"]}
    listed = cli("list", "--json", config=config)
    (kt,) = [t for t in json.loads(listed.stdout) if t["id"] == f"docker/{names['name']}"]
    assert kt["metadata"]["supported_encryption"] == ["curve"]
    told = cli("docker", "label", curve_image, "--name", names["name"], "--supported-encryption",
               "none", "-t", names["labelled"], config=config)  # fmt: skip
    assert told.returncode == 0, told.stderr
    assert "ipykernel" not in told.stdout  # told: nothing asked
    assert "metadata" not in label_of_image(names["labelled"])
    missing = f"kh-doc-test/{uuid.uuid4().hex[:8]}:absent"
    failed = cli("docker", "label", missing, config=config)
    assert failed.returncode == 2
    assert failed.stderr.strip() == (
        f"kernel-hub: error: the Docker image {missing!r} is not present on the engine "
        "('docker images' lists those it has); build it or 'docker pull' it first"
    )
