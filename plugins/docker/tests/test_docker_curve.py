"""CurveZMQ for Docker kernels, and the ipykernel 6 paths (issue 24), on a real engine.

Two real images (conftest.py): the bookworm test image with Debian's ipykernel 6.17
(no CurveZMQ, no subshells; its label declares nothing) and the same image with
ipykernel 7.4 (``build-curve-test-image.sh``; its label declares
``"metadata": {"supported_encryption": ["curve"]}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat

import kernel_hub_docker.plugin as plugin
import pytest
import pytest_asyncio
from kernel_hub_docker import kernel_containers
from kernel_hub_docker.engine import get_client

from kernel_hub import KernelHub, KernelHubError, LaunchError, RunningKernel
from kernel_hub.provider import write_connection_file
from kernel_hub.testing import ForeignClient, Sniffer, execute_output

pytestmark = [pytest.mark.docker, pytest.mark.integration]

CURVE_LABEL_TYPE = "docker/bookworm-curve"  # the name in the Curve image's label
PLAIN_LABEL_TYPE = "docker/bookworm-py"  # the name in the ipykernel 6.17 image's label
KEYS = ("key", "curve_secretkey", "curve_publickey")


@pytest_asyncio.fixture
async def hub(docker_image, curve_image):
    config = {
        "docker": {
            # The Curve image under a table of ours, declared as a kernelspec would.
            "curvecfg": {"image": curve_image, "metadata": {"supported_encryption": ["curve"]}},
            "old": {"image": docker_image},  # ipykernel 6.17: declares nothing
            # ipykernel 6.17 declared wrongly: it ignores the keys and listens plain.
            "misdeclared": {"image": docker_image, "metadata": {"supported_encryption": ["curve"]}},
        }
    }
    async with KernelHub(config=config, plugins=[plugin], load_entrypoints=False) as hub:
        yield hub
    assert not hub.kernels


def inspect(container_id: str) -> dict:
    return get_client().api.inspect_container(container_id)


def secrets_in_container_config(kernel: RunningKernel) -> list[str]:
    """Return which of the kernel's keys appear in its container's argv, env or labels."""
    data = inspect(kernel.manager.container_id)
    config = data["Config"]
    shown = json.dumps(
        [config.get("Env"), config.get("Cmd"), config.get("Entrypoint"), data.get("Args")]
        + [data.get("Path"), config.get("Labels")]
    )
    return [k for k in KEYS if kernel.connection_info[k] in shown]


def connection_file_of(kernel: RunningKernel) -> dict:
    """Return the container's connection file (in the mounted temp dir); check it is 0600."""
    temp_dir = kernel.state["temp_dir"]
    (name,) = os.listdir(temp_dir)
    path = os.path.join(temp_dir, name)
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o777 == 0o600
    # 0700 (the kernel's jupyter_client may add the sticky bit): nobody else gets in.
    assert stat.S_IMODE(os.stat(temp_dir).st_mode) & 0o777 == 0o700
    with open(path, encoding="utf-8") as f:
        return json.load(f)


async def refused_by_curve(info: dict, marker: str, kernel: RunningKernel) -> None:
    """A keyless sniffer gets no handshake on shell and IOPub, and reads nothing of *marker*."""
    sniffer = Sniffer(info)
    try:
        assert await asyncio.to_thread(sniffer.handshake, "shell") is False
        assert await asyncio.to_thread(sniffer.handshake, "iopub") is False
        async with kernel.client() as client:
            content, text = await execute_output(client, f"print({marker!r})", timeout=60)
        assert content["status"] == "ok" and text.strip() == marker  # our client reads it
        assert sniffer.received("iopub") == [] and sniffer.received("shell") == []
    finally:
        sniffer.close()


def jupyter_client_runs(path: str, code: str) -> str:
    """Run *code* with jupyter_client's BlockingKernelClient from connection file *path*."""
    from jupyter_client import BlockingKernelClient

    kc = BlockingKernelClient(connection_file=path)
    kc.load_connection_file()
    assert kc.curve_publickey is not None  # it read the Curve keys from the file
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        reply = kc.execute_interactive(code, output_hook=hook, timeout=60)
        assert reply["content"]["status"] == "ok"
        return "".join(out)
    finally:
        kc.stop_channels()
        # jupyter_client's blocking client made an event loop in this worker thread.
        with contextlib.suppress(RuntimeError):
            asyncio.get_event_loop_policy().get_event_loop().close()
        asyncio.set_event_loop(None)


# ---- the Curve image (ipykernel 7.4) ----


@pytest.mark.asyncio
async def test_a_curve_image_kernel_is_encrypted_under_auto_and_jupyter_client_talks_to_it(
    hub, tmp_path
):
    types = {kt.id: kt for kt in await hub.find_kernel_types()}
    assert types[CURVE_LABEL_TYPE].metadata["supported_encryption"] == ["curve"]
    kernel = await hub.launch(CURVE_LABEL_TYPE, restart=False)  # the hub's default: auto
    path = tmp_path / "kernel.json"
    try:
        info = kernel.connection_info
        assert info["ip"] == "127.0.0.1" and info["curve_publickey"] and info["curve_secretkey"]
        # The container's own file (0600) has the same pair; nothing else of it shows them.
        inside = connection_file_of(kernel)
        assert {k: inside[k] for k in KEYS} == {k: info[k] for k in KEYS}
        assert secrets_in_container_config(kernel) == []
        await refused_by_curve(dict(info), f"docker-curve-{os.getpid()}", kernel)
        # jupyter_client's client, from a connection file of the host-side info.
        write_connection_file(dict(info), str(path))
        assert (await asyncio.to_thread(jupyter_client_runs, str(path), "print(6 * 7)")) == "42\n"
    finally:
        path.unlink(missing_ok=True)  # it holds the keys: it must not outlive the test
        await kernel.shutdown()


@pytest.mark.asyncio
async def test_a_restart_keeps_the_curve_keys_and_every_client_goes_on(hub):
    kernel = await hub.launch("docker/curvecfg")  # the config table's declaration
    before = dict(kernel.connection_info)
    assert before["curve_publickey"]
    first = kernel.manager.container_id
    foreign = ForeignClient(before)  # jupyter_client, from the connection info
    blocking = await asyncio.to_thread(kernel.blocking_client)
    try:
        await foreign.start()
        assert await foreign.print_1() == ["1\n"]
        async with kernel.client() as client:
            assert (await client.execute("x = 41", timeout=60)).content["status"] == "ok"
            await kernel.restart(now=True)
            assert kernel.manager.container_id != first
            assert {k: kernel.connection_info[k] for k in before} == before  # keys and ports
            assert {k: connection_file_of(kernel)[k] for k in KEYS} == {k: before[k] for k in KEYS}
            assert secrets_in_container_config(kernel) == []
            # Clients made before the restart reach the new container, with the same keys.
            content, text = await execute_output(client, "print('back')", timeout=60)
            assert content["status"] == "ok" and text == "back\n"
            assert await asyncio.to_thread(blocking.execute, "y = 1", timeout=60)
            await foreign.wait_for_iopub()
            assert await foreign.print_1() == ["1\n"]
        await refused_by_curve(dict(kernel.connection_info), "after-restart", kernel)
    finally:
        await asyncio.to_thread(blocking.close)
        await foreign.close()
        await kernel.shutdown()


@pytest.mark.asyncio
async def test_disabled_runs_the_curve_image_plain(hub):
    types = {kt.id: kt for kt in await hub.find_kernel_types()}
    assert types[CURVE_LABEL_TYPE].metadata["supported_encryption"] == ["curve"]
    kernel = await hub.launch(CURVE_LABEL_TYPE, restart=False, transport_encryption="disabled")
    try:
        info = kernel.connection_info
        assert "curve_publickey" not in info and "curve_publickey" not in connection_file_of(kernel)
        sniffer = Sniffer(info)
        try:  # plain: anyone gets through (what Curve stops)
            assert await asyncio.to_thread(sniffer.handshake, "shell") is True
            sniffer.ask_kernel_info(info["key"])
            reply = await asyncio.to_thread(sniffer.received, "shell", wait=60)
            assert any(b"kernel_info_reply" in frame for frames in reply for frame in frames)
        finally:
            sniffer.close()
        async with kernel.client() as client:
            content, text = await execute_output(client, "print(6*7)", timeout=60)
        assert content["status"] == "ok" and text == "42\n"
    finally:
        await kernel.shutdown()


# ---- the ipykernel 6.17 image: no CurveZMQ, no subshells ----


@pytest.mark.asyncio
async def test_required_on_the_ipykernel_6_image_says_how_to_declare_it_and_leaves_nothing(
    hub, docker_image
):
    before = {c.id for c in await asyncio.to_thread(kernel_containers)}
    for type_id, fix in (
        (
            PLAIN_LABEL_TYPE,
            f"'kernel-hub docker label {docker_image} --supported-encryption curve'",
        ),
        ("docker/old", 'add metadata = { supported_encryption = ["curve"] } to its [docker.old]'),
    ):
        kernel_id = f"curve-required-{type_id[7:]}-{os.getpid()}"
        with pytest.raises(LaunchError) as info:
            await hub.launch(type_id, kernel_id=kernel_id, transport_encryption="required")
        message = str(info.value)
        assert f"kernel {type_id} does not declare CurveZMQ support" in message
        assert fix in message and "ipykernel >= 7.4" in message and "\n" not in message
    assert {c.id for c in await asyncio.to_thread(kernel_containers)} == before
    assert not hub.kernels


@pytest.mark.asyncio
async def test_an_image_that_declares_curve_wrongly_fails_at_once_and_leaves_nothing(hub):
    """Its kernel ignores the keys: the start fails when a plain handshake succeeds where
    Curve's failed, not after ready_timeout, and the container is removed."""
    before = {c.id for c in await asyncio.to_thread(kernel_containers)}
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(LaunchError, match="docker/misdeclared does not speak CurveZMQ") as info:
        await hub.launch("docker/misdeclared", ready_timeout=600)
    assert loop.time() - began < 300
    assert "transport_encryption='disabled'" in str(info.value)
    assert {c.id for c in await asyncio.to_thread(kernel_containers)} == before
    assert not hub.kernels


@pytest.mark.asyncio
async def test_the_ipykernel_6_image_runs_plain_under_auto_without_a_warning_and_has_no_subshells(
    hub, caplog
):
    caplog.set_level(logging.WARNING)
    kernel = await hub.launch(PLAIN_LABEL_TYPE, restart=False)  # auto
    try:
        assert "curve_publickey" not in kernel.connection_info
        async with kernel.client() as client:
            with pytest.raises(KernelHubError) as info:
                # ipykernel 6 never answers a create_subshell_request: the client refuses
                # at once from the kernel_info_reply, instead of timing out after 60 s.
                await client.create_subshell(timeout=60)
            message = str(info.value)
            assert "has no subshells" in message and "ipykernel 7 or later" in message
            assert not isinstance(info.value, TimeoutError)
            # A shell request for a subshell would run on the main shell: refused too.
            with pytest.raises(KernelHubError, match="has no subshells"):
                await client.execute("1", subshell_id="any", timeout=60)
            content, text = await execute_output(client, "print(6*7)", timeout=60)
            assert content["status"] == "ok" and text == "42\n"  # the client goes on
    finally:
        await kernel.shutdown()
    # Nothing warns about its plain transport (other warnings would be about other things of
    # the machine, such as a user's images).
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w for w in warned if "encrypt" in w.lower() or "curve" in w.lower()] == []
