"""Benchmark: a Docker kernel's start→ready through kernel_hub vs a bare docker-py script.

Usage: ``uv run python bench/docker_bench.py [--runs 7] [--image TAG]``

Both sides start the same image and wait until the kernel answers
``kernel_info`` and IOPub is live:

- **kernel_hub**: ``await hub.launch("docker/<label name>")`` (config, container,
  loopback port publishing, ready check), i.e. everything a host waits for;
- **bare**: the minimal docker-py script: write a connection file, ``containers.run``
  with the five ports published on 127.0.0.1, read the host ports back, then
  send ``kernel_info_request`` over plain pyzmq (signed with jupyter_client's
  ``Session``), wait for the reply, and nudge every 50 ms until IOPub delivers
  (the same readiness rule as kernel_hub's ``wait_for_ready``).

Containers are removed after each run (not timed). The two sides alternate, and
the medians of the runs are reported with their ratio (target ≤ 1.15).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time

import docker
import kernel_hub_docker.plugin as plugin
import zmq
from jupyter_client.session import Session

from kernel_hub import KernelHub

PORTS = (50550, 50551, 50552, 50553, 50554)
NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def bare_start(client: docker.DockerClient, image: str) -> float:
    """Start a kernel container with plain docker-py; return seconds until it is ready."""
    tmp = tempfile.mkdtemp(prefix="bench-docker-")
    key = secrets.token_hex(32)
    info = {"transport": "tcp", "ip": "0.0.0.0", "key": key, "signature_scheme": "hmac-sha256"}
    info.update(dict(zip(NAMES, PORTS, strict=True)))
    with open(os.path.join(tmp, "k.json"), "w") as f:
        json.dump(info, f)
    t0 = time.perf_counter()
    container = client.containers.run(
        image,
        ["python3", "-m", "ipykernel_launcher", "-f", "/conn/k.json"],
        detach=True,
        volumes={tmp: {"bind": "/conn", "mode": "rw"}},
        ports={f"{p}/tcp": ("127.0.0.1", None) for p in PORTS},
    )
    try:
        container.reload()
        bound = container.attrs["NetworkSettings"]["Ports"]
        host = {n: int(bound[f"{p}/tcp"][0]["HostPort"]) for n, p in zip(NAMES, PORTS, strict=True)}
        wait_ready(host, key)
        elapsed = time.perf_counter() - t0
    finally:
        container.remove(force=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return elapsed


def wait_ready(ports: dict[str, int], key: str, timeout: float = 60.0) -> None:
    """Wait for a kernel_info reply on shell and then any message on IOPub."""
    ctx = zmq.Context.instance()
    session = Session(key=key.encode())
    shell = ctx.socket(zmq.DEALER)
    iopub = ctx.socket(zmq.SUB)
    iopub.setsockopt(zmq.SUBSCRIBE, b"")
    shell.connect(f"tcp://127.0.0.1:{ports['shell_port']}")
    iopub.connect(f"tcp://127.0.0.1:{ports['iopub_port']}")
    deadline = time.monotonic() + timeout
    try:
        session.send(shell, "kernel_info_request", {})
        if not shell.poll(timeout * 1000):
            raise TimeoutError("no kernel_info_reply")
        session.recv(shell)
        while not iopub.poll(50):
            if time.monotonic() > deadline:
                raise TimeoutError("IOPub stayed silent")
            session.send(shell, "kernel_info_request", {})
    finally:
        shell.close(linger=0)
        iopub.close(linger=0)


async def hub_start(hub: KernelHub, type_id: str) -> float:
    """Launch through kernel_hub; return seconds until ``hub.launch`` returned a ready kernel."""
    t0 = time.perf_counter()
    kernel = await hub.launch(type_id)
    elapsed = time.perf_counter() - t0
    await kernel.shutdown(now=True)
    return elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--image", default="kernel-hub-test/ipykernel:bookworm")
    parser.add_argument("--type", default="docker/bookworm-py", help="the image's kernel type id")
    args = parser.parse_args()
    client = docker.from_env()
    hub_times: list[float] = []
    bare_times: list[float] = []
    async with KernelHub(config={}, plugins=[plugin], load_entrypoints=False) as hub:
        await hub.get_kernel_type(args.type)
        # One unmeasured round each: page cache, engine and import warm-up.
        await hub_start(hub, args.type)
        await asyncio.to_thread(bare_start, client, args.image)
        for _ in range(args.runs):
            hub_times.append(await hub_start(hub, args.type))
            bare_times.append(await asyncio.to_thread(bare_start, client, args.image))
    hub_med = statistics.median(hub_times)
    bare_med = statistics.median(bare_times)
    print(f"runs: {args.runs} each, alternating; image {args.image}")
    print(f"kernel_hub start->ready: median {hub_med:.3f} s  {[round(t, 3) for t in hub_times]}")
    print(f"bare docker-py:          median {bare_med:.3f} s  {[round(t, 3) for t in bare_times]}")
    print(f"ratio kernel_hub/bare: {hub_med / bare_med:.3f} (target <= 1.15)")


if __name__ == "__main__":
    asyncio.run(main())
