"""Start one kernel in one container, with its ports published on 127.0.0.1 only.

Inside the container the kernel binds ``0.0.0.0`` on fixed ports: it has to,
to be reachable through Docker's port publishing, and that address is the
container's own network namespace. On the host each port is published on
127.0.0.1 with a port Docker chooses, read back from the container's inspect
data, so nothing listens on other interfaces and no port race is possible.

A relaunch (``request.connection`` set) publishes on the previous container's
host ports instead, with its key and signature scheme, so that the host-side
endpoint is unchanged. Should one of those ports be taken, Docker chooses new
ones (the core then emits ``connection_changed``); the key is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from kernel_hub.provider import (
    CHANNELS,
    LaunchError,
    LaunchResult,
    curve_for,
    curve_keys,
    expand_env,
    format_argv,
    ports_free,
    reap_on_exit,
    runtime_dir,
    supports_curve,
    write_connection_file,
)

from .engine import engine_errors, get_client
from .images import DockerOptions, options_of, parse_mount
from .owner import LABEL_KERNEL_ID, LABEL_OUTLIVE, LABEL_TEMP_DIR, LABEL_TYPE_ID, owner_labels
from .reap import register as register_reap

if TYPE_CHECKING:
    from collections.abc import Mapping

    import docker

    from kernel_hub.provider import HubContext, KernelType, LaunchRequest

__all__ = ["CONTAINER_DIR", "CONTAINER_PORTS", "encrypted", "launch_container"]

log = logging.getLogger("kernel_hub.docker")

#: The kernel's ports inside the container (its own network namespace, so fixed ports are safe).
CONTAINER_PORTS = {channel: 50550 + i for i, channel in enumerate(CHANNELS)}
#: Where the private connection directory is mounted inside the container.
CONTAINER_DIR = "/run/kernel-hub"

_LOG_LINES = 20
# Reap containers of dead owners once per process, before its first launch.
_reconciled = False


def _logs_tail(api: docker.APIClient, container_id: str, lines: int = _LOG_LINES) -> str:
    with contextlib.suppress(Exception):
        raw = api.logs(container_id, stdout=True, stderr=True, tail=lines)
        return raw.decode(errors="replace").rstrip()
    return ""


def _ensure_image(
    client: docker.DockerClient,
    image: str,
    *,
    pull: bool,
    progress: Any,
) -> None:
    """Make sure *image* is present locally, pulling it when allowed."""
    from docker.errors import APIError, ImageNotFound

    try:
        client.api.inspect_image(image)
        return
    except ImageNotFound:
        pass
    if not pull:
        raise LaunchError(
            f"the Docker image {image!r} is not present on the engine; build it from a "
            "Dockerfile (kernel-hub-docker's README, 'Making a kernel image': its FROM image "
            "must be local or in a registry the engine can reach), make one from an image you "
            "have with 'kernel-hub docker label IMAGE --name NAME', 'docker pull "
            f"{image}', or set pull = true in this kernel type's [docker.<name>] config table"
        )
    repo, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    progress(f"pulling image {image}")
    try:
        last = ""
        for event in client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
            if "error" in event:
                raise APIError(event["error"])
            status = event.get("status", "")
            if status and status != last and "id" not in event:
                last = status
                progress(f"{image}: {status}")
    except APIError as exc:
        raise LaunchError(
            f"pulling the Docker image {image!r} failed: {exc.explanation or exc}. Check the "
            "image name and that its registry is reachable (or build the image locally)."
        ) from None


def encrypted(kernel_type: KernelType, request: LaunchRequest) -> bool:
    """Return whether a kernel of *kernel_type* gets CurveZMQ keys for *request*.

    :func:`kernel_hub.provider.curve_for`, with the fix a Docker user needs when
    ``required`` meets a type that declares nothing: where to declare it.

    :raises LaunchError: for ``required`` with a type that does not declare CurveZMQ.
    """
    if request.transport_encryption == "required" and not supports_curve(kernel_type):
        options = options_of(kernel_type)
        if options.source == "label":
            where = (
                f"label its image with 'kernel-hub docker label {options.image} "
                "--supported-encryption curve' (the label's \"metadata\": "
                '{"supported_encryption": ["curve"]})'
            )
        else:
            where = (
                f'add metadata = {{ supported_encryption = ["curve"] }} to its '
                f"[docker.{kernel_type.name}] table"
            )
        raise LaunchError(
            f"kernel {kernel_type.id} does not declare CurveZMQ support, but "
            f"transport_encryption is 'required'; if its image has ipykernel >= 7.4, {where}, "
            "or launch it with transport_encryption 'auto'"
        )
    return curve_for(kernel_type, request)


class _HostPortsTaken(LaunchError):
    """Docker could not publish on the host ports asked for: another process holds one."""


def _previous_endpoint(
    previous: Mapping[str, Any] | None,
) -> tuple[str, str, dict[str, int] | None]:
    """Return the key, signature scheme and host ports a relaunch keeps.

    The key and scheme of *previous* are kept whenever it has them; its five
    ports only when they were on 127.0.0.1 and are free now (a fresh key, the
    default scheme and ``None`` — Docker chooses — otherwise). Blocking: it
    probes the ports.
    """
    if not previous:
        return secrets.token_hex(32), "hmac-sha256", None
    old_key = previous.get("key")
    if isinstance(old_key, bytes):
        old_key = old_key.decode("ascii")
    key = str(old_key) if old_key else secrets.token_hex(32)
    scheme = str(previous.get("signature_scheme") or "hmac-sha256")
    try:
        ports = {c: int(previous[f"{c}_port"]) for c in CHANNELS}
    except (KeyError, TypeError, ValueError):
        return key, scheme, None  # a retry after a taken port passes no ports
    usable = (
        previous.get("ip") == "127.0.0.1"
        and previous.get("transport", "tcp") == "tcp"
        and all(0 < p < 65536 for p in ports.values())
        and len(set(ports.values())) == len(ports)
        and ports_free(ports.values(), "127.0.0.1")
    )
    return key, scheme, ports if usable else None


def _create_and_start(
    hub: HubContext | None,
    kernel_type: KernelType,
    request: LaunchRequest,
    options: DockerOptions,
    *,
    temp_dir: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Blocking part of the launch; returns ``(connection_info, state)``."""
    from docker.errors import APIError, DockerException

    client = get_client()
    api = client.api

    def progress(message: str) -> None:
        # Called on this worker thread; hub.emit delivers on the hub's loop.
        if hub is not None:
            hub.emit("progress", request.kernel_id, kernel_type.id, step="pulling", message=message)

    with engine_errors():
        _ensure_image(client, options.image, pull=options.pull, progress=progress)

    key, scheme, host_ports = _previous_endpoint(request.connection)
    # CurveZMQ where the type declares it (its table's or label's metadata), with the keys
    # where the HMAC key goes: into the connection file only (0600, mounted), never argv,
    # env or a label (checked on the container's inspect data by the tests).
    curve = curve_keys(request.connection) if encrypted(kernel_type, request) else {}
    kernel_info = {
        "transport": "tcp",
        "ip": "0.0.0.0",  # inside the container's namespace; see the module docstring
        "key": key,
        "signature_scheme": scheme,
        "kernel_name": kernel_type.name,
        **{f"{c}_port": p for c, p in CONTAINER_PORTS.items()},
        **curve,
    }
    conn_name = f"kernel-{request.kernel_id}.json"
    write_connection_file(kernel_info, os.path.join(temp_dir, conn_name))
    argv = format_argv(
        kernel_type.argv,
        connection_file=f"{CONTAINER_DIR}/{conn_name}",
        kernel_id=request.kernel_id,
        resource_dir="",
        prefix="/usr",
    )
    env = {**expand_env(kernel_type.env, os.environ), **request.env}
    binds: dict[str, Mapping[str, str]] = {temp_dir: {"bind": CONTAINER_DIR, "mode": "rw"}}
    for spec in options.mounts:
        host, target, mode = parse_mount(spec)
        binds[host] = {"bind": target, "mode": mode}
    workdir = options.workdir
    if options.mount_cwd and request.cwd:
        if not os.path.isdir(request.cwd):
            raise LaunchError(
                f"cannot launch {kernel_type.id}: working directory {request.cwd!r} "
                + ("is not a directory" if os.path.exists(request.cwd) else "does not exist")
                + "; give the path of an existing directory as cwd"
            )
        cwd = os.path.abspath(request.cwd)
        workdir = workdir or cwd
        binds[cwd] = {"bind": workdir, "mode": "rw"}
    labels = {
        LABEL_KERNEL_ID: request.kernel_id,
        LABEL_TYPE_ID: kernel_type.id,
        LABEL_TEMP_DIR: temp_dir,
        **owner_labels(),
        **({LABEL_OUTLIVE: f"{request.outlive:g}"} if request.outlive else {}),
    }

    def run(host_ports: Mapping[str, int] | None) -> tuple[str, dict[str, Any], dict[str, int]]:
        """Create and start the container; return its id, inspect data and host ports."""
        ports: dict[int | str, tuple[str, int | None]] = {
            f"{p}/tcp": ("127.0.0.1", host_ports[c] if host_ports else None)
            for c, p in CONTAINER_PORTS.items()
        }
        try:
            host_config = api.create_host_config(
                binds=binds,
                port_bindings=ports,
                init=options.init,
                nano_cpus=int(options.cpus * 1e9) if options.cpus else None,
                mem_limit=options.memory,
                network_mode=options.network,
            )
        except DockerException as exc:
            raise LaunchError(
                f"cannot publish the ports of {kernel_type.id} on 127.0.0.1: {exc}. "
                "Use a bridge or user-defined network (not 'host' or 'none')."
            ) from None
        created = api.create_container(
            options.image,
            command=argv,
            environment=env,
            working_dir=workdir,
            user=options.user,
            labels=labels,
            ports=list(CONTAINER_PORTS.values()),
            host_config=host_config,
            name=f"kernel-hub-{request.kernel_id[:8]}-{secrets.token_hex(3)}",
            # SIGINT is the kernel's interrupt, not its stop signal; docker stop sends TERM.
            stop_signal="SIGTERM",
        )
        cid = created["Id"]
        try:
            try:
                api.start(cid)
            except APIError as exc:
                explanation = str(exc.explanation or exc)
                if "port" in explanation.lower() or "bind" in explanation.lower():
                    if host_ports:
                        raise _HostPortsTaken(explanation) from None
                    raise LaunchError(
                        f"Docker could not publish the ports of {kernel_type.id} on 127.0.0.1: "
                        f"{explanation}. Check that the engine may bind loopback ports "
                        "(userland-proxy, firewall) and that the network supports publishing."
                    ) from None
                raise LaunchError(
                    f"Docker could not start the container of {kernel_type.id} "
                    f"(image {options.image}): {explanation}"
                ) from None
            inspect = api.inspect_container(cid)
            published = _published_ports(inspect)
            if inspect["State"].get("Running") is False and inspect["State"]["Status"] == "exited":
                tail = _logs_tail(api, cid)
                raise LaunchError(
                    f"the container of {kernel_type.id} (image {options.image}) exited during "
                    f"start with status {inspect['State'].get('ExitCode')}."
                    + (f" Its last log lines:\n{tail}\n" if tail else " It logged nothing. ")
                    + "Check the kernel type's argv and that ipykernel is installed in the image."
                )
            missing = [c for c in CHANNELS if c not in published]
            if missing:
                raise LaunchError(
                    f"Docker did not publish the kernel ports of {kernel_type.id} "
                    f"({', '.join(missing)}) on 127.0.0.1 (network "
                    f"{options.network or 'default'!r}). Use a bridge or user-defined network: "
                    "'host' and 'none' networks cannot publish ports."
                )
        except BaseException:
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)
            raise
        return cid, inspect, published

    with engine_errors():
        try:
            cid, inspect, host_ports = run(host_ports)
        except _HostPortsTaken as exc:
            # Taken between the probe and the start: new ports, the same key.
            log.info(
                "the previous host ports of kernel %s are taken (%s); Docker chooses new ones",
                request.kernel_id,
                exc,
            )
            cid, inspect, host_ports = run(None)
    info = {
        "transport": "tcp",
        "ip": "127.0.0.1",
        "key": key,
        "signature_scheme": scheme,
        "kernel_name": kernel_type.name,
        **{f"{c}_port": host_ports[c] for c in CHANNELS},
        **curve,
    }
    state = {
        "container_id": cid,
        "container_name": inspect["Name"].lstrip("/"),
        "image": options.image,
        "temp_dir": temp_dir,
        "kernel_id": request.kernel_id,
    }
    return info, state


def _published_ports(inspect: Mapping[str, Any]) -> dict[str, int]:
    """Return ``channel -> host port`` from a container's inspect data."""
    ports = (inspect.get("NetworkSettings") or {}).get("Ports") or {}
    out = {}
    for channel, port in CONTAINER_PORTS.items():
        for binding in ports.get(f"{port}/tcp") or []:
            if binding.get("HostIp") in ("127.0.0.1", "") and binding.get("HostPort"):
                out[channel] = int(binding["HostPort"])
                break
    return out


async def launch_container(
    hub: HubContext | None, kernel_type: KernelType, request: LaunchRequest
) -> LaunchResult:
    """Start *kernel_type* in a new container and return its connection info and state.

    Launch ``params`` override the type's container options (``cpus``,
    ``memory``, ``image``, ``network``, ``mount_cwd``, ``pull``, …). Emits
    ``progress`` events while an image is pulled.

    :raises LaunchError: engine down, image missing, container exited during
        start (with its last log lines), ports not published. Nothing is left:
        the container and the temp dir are removed.
    """
    global _reconciled
    options = options_of(kernel_type).merged(request.params)
    encrypted(kernel_type, request)  # 'required' for a type that cannot: before anything runs
    if not _reconciled:
        from .prune import prune

        _reconciled = True
        try:
            removed = await asyncio.to_thread(prune)
        except LaunchError:
            pass  # the engine is down: the launch below says so, with the fix
        except Exception as exc:  # noqa: BLE001 - reconciling is a courtesy, not the launch
            log.warning("could not remove kernel containers of dead owners: %r", exc)
        else:
            if removed:
                log.info("removed %d kernel containers of dead owners", len(removed))
    # Before any container or key file exists: should this process die, even by SIGKILL, the
    # reaper removes its containers, and the temp dir with the connection file (the key).
    register_reap()
    temp_dir = tempfile.mkdtemp(prefix="kernel-hub-docker-", dir=runtime_dir())
    # Until the container exists (its labels name the temp dir), the reaper knows the files.
    forget_files = reap_on_exit(
        [os.path.join(temp_dir, f"kernel-{request.kernel_id}.json"), temp_dir]
    )
    work = asyncio.ensure_future(
        asyncio.to_thread(
            _create_and_start,
            hub,
            kernel_type,
            request,
            options,
            temp_dir=temp_dir,
        )
    )
    try:
        info, state = await asyncio.shield(work)
    except asyncio.CancelledError:
        # The worker thread cannot be stopped; whatever it still creates is removed when it ends.
        work.add_done_callback(functools.partial(_discard_late, temp_dir=temp_dir))
        raise
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        forget_files()
        raise
    forget_files()  # the container's labels cover the temp dir now (see .reap)
    return LaunchResult(connection_info=info, state=state)


def _discard_late(
    work: asyncio.Future[tuple[dict[str, Any], dict[str, Any]]], *, temp_dir: str
) -> None:
    """Remove the container and temp dir of a launch whose caller was cancelled."""
    # A failed worker has removed its container already.
    ok = not work.cancelled() and work.exception() is None
    cid = work.result()[1]["container_id"] if ok else None

    def remove() -> None:
        if cid is not None:
            with contextlib.suppress(Exception):
                get_client().api.remove_container(cid, force=True)
        shutil.rmtree(temp_dir, ignore_errors=True)

    threading.Thread(target=remove, name="kernel-hub-docker-discard", daemon=True).start()
