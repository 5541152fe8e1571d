"""Shared connections and tunnels through a real sshd, with a plain TCP echo service as "remote"."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest
import pytest_asyncio
from kernel_hub_ssh import connection as sshconn
from kernel_hub_ssh import tunnel
from kernel_hub_ssh._asyncssh import asyncssh
from kernel_hub_ssh.config import SSHHostConfig
from kernel_hub_ssh.connection import SSHLoop, acquire, open_connection
from kernel_hub_ssh.tunnel import open_tunnels

from kernel_hub.contract.errors import LaunchError

pytestmark = [pytest.mark.ssh]


def target_of(sshd, **kw) -> SSHHostConfig:
    fields = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "identity_file": str(sshd.user_key),
        "known_hosts": str(sshd.known_hosts),
        "connect_timeout": 10.0,
    }
    fields.update(kw)
    return SSHHostConfig(**fields)


@pytest_asyncio.fixture
async def echo_server():
    """A TCP echo service on 127.0.0.1 (the "remote" loopback is this machine's)."""

    writers = set()

    async def echo(reader, writer):
        writers.add(writer)
        try:
            await _echo(reader, writer)
        finally:
            writers.discard(writer)

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    # Streams sshd still holds open would outlive the test's loop: close them here.
    for writer in list(writers):
        writer.close()
    await server.wait_closed()


async def roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    finally:
        writer.close()


async def on_ssh_loop(coro):
    return await SSHLoop.get().submit(coro)


@pytest.mark.asyncio
async def test_connection_is_shared_and_refcounted(sshd):
    target = target_of(sshd)
    a = await on_ssh_loop(acquire(target))
    b = await on_ssh_loop(acquire(target))
    try:
        assert a is b
        assert a.refs == 2 and a.connects == 1
        assert (
            repr(a) == f"<HostConnection root@127.0.0.1:{sshd.port} [CONNECTED refs=2 connects=1]>"
        )
        assert len(sshd.session_pids()) == 1
    finally:
        await on_ssh_loop(a.release())
        assert a.state == "CONNECTED"
        await on_ssh_loop(b.release())
    assert a.state == "CLOSED"
    assert a not in sshconn.pool_snapshot()


@pytest.mark.asyncio
async def test_tunnel_forwards_and_survives_a_dropped_connection(sshd, echo_server):
    events: list[tuple[str, dict]] = []
    restored = asyncio.Event()
    loop = asyncio.get_running_loop()

    def listener(kind, data):
        events.append((kind, data))
        if kind == "connection_restored":
            loop.call_soon_threadsafe(restored.set)

    host = await on_ssh_loop(acquire(target_of(sshd)))
    unsubscribe = host.subscribe(listener)
    ts = await on_ssh_loop(open_tunnels(host, {"echo_port": echo_server}, key=("t", 1)))
    try:
        (local,) = ts.local_ports.values()
        assert local != echo_server
        assert await roundtrip(local, b"hello") == b"hello"
        assert ts.connection_info({"ip": "10.0.0.1", "echo_port": echo_server, "key": "k"}) == {
            "ip": "127.0.0.1",
            "echo_port": local,
            "key": "k",
        }

        (session,) = sshd.session_pids()
        os.kill(session, signal.SIGKILL)
        await asyncio.wait_for(restored.wait(), 30)

        assert [k for k, _ in events] == ["connection_lost", "connection_restored"]
        assert events[0][1] == {"host": f"root@127.0.0.1:{sshd.port}"}
        assert host.connects == 2 and host.state == "CONNECTED"
        # Same local port as before: clients keep their connection info.
        assert ts.local_ports == {"echo_port": local}
        assert await roundtrip(local, b"again" * 1000) == b"again" * 1000
    finally:
        unsubscribe()
        await on_ssh_loop(ts.release())
    assert host.state == "CLOSED"
    assert not sshd.session_pids() or await _sessions_gone(sshd)


async def _sessions_gone(sshd) -> bool:
    # sshd reaps the session process a moment after the client closed the connection.
    for _ in range(200):
        if not sshd.session_pids():
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.asyncio
async def test_stream_opened_during_outage_waits_for_reconnect(sshd, echo_server):
    loop = asyncio.get_running_loop()
    lost = asyncio.Event()
    host = await on_ssh_loop(acquire(target_of(sshd)))
    host.subscribe(
        lambda kind, data: kind == "connection_lost" and loop.call_soon_threadsafe(lost.set)
    )
    ts = await on_ssh_loop(open_tunnels(host, {"p": echo_server}, key=("t", 2)))
    try:
        local = ts.local_ports["p"]
        # A stopped sshd listener accepts TCP but never answers: the reconnect hangs.
        os.kill(sshd.pid, signal.SIGSTOP)
        try:
            (session,) = sshd.session_pids()
            os.kill(session, signal.SIGKILL)
            await asyncio.wait_for(lost.wait(), 30)
            assert host.state == "RECONNECTING"
            pending = asyncio.ensure_future(roundtrip(local, b"x" * 10))
            done, _ = await asyncio.wait({pending}, timeout=0.3)
            assert not done, "the stream must wait for the new connection"
        finally:
            os.kill(sshd.pid, signal.SIGCONT)
        assert await asyncio.wait_for(pending, 30) == b"x" * 10
        assert host.connects == 2
    finally:
        await on_ssh_loop(ts.release())


@pytest.mark.asyncio
async def test_gone_after_reconnect_timeout(sshd):
    host = await on_ssh_loop(acquire(target_of(sshd, connect_timeout=2.0, reconnect_timeout=1.0)))
    loop = asyncio.get_running_loop()
    gone = asyncio.Event()
    host.subscribe(lambda kind, data: kind == "gone" and loop.call_soon_threadsafe(gone.set))
    try:
        os.kill(sshd.pid, signal.SIGSTOP)  # unreachable: reconnects time out
        try:
            (session,) = sshd.session_pids()
            os.kill(session, signal.SIGKILL)
            await asyncio.wait_for(gone.wait(), 30)
        finally:
            os.kill(sshd.pid, signal.SIGCONT)
        assert host.state == "GONE"
        assert host not in sshconn.pool_snapshot()
        with pytest.raises(ConnectionError, match="gone"):
            await on_ssh_loop(host.connected(1))
    finally:
        await on_ssh_loop(host.release())


async def _echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest_asyncio.fixture
async def refusals(monkeypatch):
    """An event set (on the test's loop) each time sshd refuses to open a remote end."""
    loop = asyncio.get_running_loop()
    refused = asyncio.Event()
    real_open = asyncssh.SSHClientConnection.open_connection

    async def open_connection(self, *args, **kwargs):
        try:
            return await real_open(self, *args, **kwargs)
        except asyncssh.ChannelOpenError:
            loop.call_soon_threadsafe(refused.set)
            raise

    monkeypatch.setattr(asyncssh.SSHClientConnection, "open_connection", open_connection)
    return refused


@pytest.mark.asyncio
async def test_stream_to_a_port_not_listening_yet_waits_for_it(sshd, refusals):
    # A kernel binds its ports a moment after its nanny answered, and clients connect at once.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections to it are refused
    port = sock.getsockname()[1]
    host = await on_ssh_loop(acquire(target_of(sshd)))
    ts = await on_ssh_loop(open_tunnels(host, {"p": port}, key=("t", 3)))
    server = None
    try:
        pending = asyncio.ensure_future(roundtrip(ts.local_ports["p"], b"early"))
        await asyncio.wait_for(refusals.wait(), 30)
        assert not pending.done(), "the stream must be held while the port refuses"
        sock.listen()
        server = await asyncio.start_server(_echo, sock=sock)
        # The same TCP stream goes through (a dropped one would end this read with EOF).
        assert await asyncio.wait_for(pending, 30) == b"early"
    finally:
        await on_ssh_loop(ts.release())
        if server is not None:
            server.close()
        else:
            sock.close()


@pytest.mark.asyncio
async def test_stream_to_a_port_that_stays_closed_is_dropped(sshd, refusals, monkeypatch):
    monkeypatch.setattr(tunnel, "REMOTE_WAIT", 0.05)
    host = await on_ssh_loop(acquire(target_of(sshd)))
    ts = await on_ssh_loop(open_tunnels(host, {"p": _dead_port()}, key=("t", 4)))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ts.local_ports["p"])
        try:
            assert await asyncio.wait_for(reader.read(1), 30) == b""  # EOF: given up
        finally:
            writer.close()
        assert refusals.is_set()
    finally:
        await on_ssh_loop(ts.release())


def _dead_port() -> int:
    from kernel_hub.testing import free_ports

    (port,) = free_ports(1)  # nobody listens there
    return port


# ---- failures of the connection itself ----


async def connect_fails(target) -> str:
    with pytest.raises(LaunchError) as info:
        await on_ssh_loop(open_connection(target))
    return str(info.value)


async def run_over(target, command: str) -> str:
    """Connect to *target*, run *command* there and return its stdout."""

    async def run():
        conn = await open_connection(target)
        try:
            return (await conn.run(command, check=True)).stdout
        finally:
            conn.close()

    return await on_ssh_loop(run())


@pytest.mark.asyncio
async def test_unreachable_host(sshd):
    msg = await connect_fails(target_of(sshd, port=_dead_port()))
    assert "cannot reach ssh host 'root@127.0.0.1:" in msg
    assert "sshd" in msg


@pytest.mark.asyncio
async def test_refused_auth(sshd, tmp_path):
    other = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    msg = await connect_fails(target_of(sshd, identity_file=str(other)))
    assert "refused authentication as root" in msg
    assert "authorized_keys" in msg


@pytest.mark.asyncio
async def test_unknown_host_key(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    msg = await connect_fails(target_of(sshd, known_hosts=str(empty)))
    assert "is unknown" in msg and str(empty) in msg
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1" in msg
    assert "insecure_no_host_key_check" in msg


@pytest.mark.asyncio
async def test_host_key_mismatch(sshd, tmp_path):
    other = tmp_path / "other_host"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    kind, blob = (tmp_path / "other_host.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    msg = await connect_fails(target_of(sshd, known_hosts=str(wrong)))
    assert "does NOT match" in msg and "ssh-keygen" in msg and "-R 127.0.0.1" in msg


@pytest.mark.asyncio
async def test_insecure_opt_out_skips_the_host_key_check(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    target = target_of(sshd, known_hosts=str(empty), insecure_no_host_key_check=True)
    assert await run_over(target, "echo ok") == "ok\n"


@pytest.mark.asyncio
async def test_alias_from_ssh_config(sshd):
    target = SSHHostConfig(host=sshd.alias, config=(str(sshd.ssh_config),))
    assert (await run_over(target, "echo $USER")).strip() == sshd.user


@pytest.mark.asyncio
async def test_jump_host(sshd):
    # Hop through the same sshd to itself: proves the jump connection is made and used.
    target = target_of(sshd, jump_host=f"{sshd.user}@127.0.0.1:{sshd.port}")
    assert (await run_over(target, "echo hop")).strip() == "hop"


@pytest.mark.asyncio
async def test_local_listener_avoids_ports_it_is_told_to(sshd):
    from kernel_hub_ssh.tunnel import Tunnel

    host = await on_ssh_loop(acquire(target_of(sshd)))
    taken = []
    try:

        async def bind_some():
            # Learn which ports the OS hands out next, then forbid them.
            probe = [Tunnel(host, 1) for _ in range(3)]
            ports = [await t.open() for t in probe]
            for t in probe:
                await t.close()
            t = Tunnel(host, 1)
            taken.append(t)
            return ports, await t.open(avoid=set(ports))

        ports, got = await on_ssh_loop(bind_some())
        assert got not in ports
    finally:
        for t in taken:
            await on_ssh_loop(t.close())
        await on_ssh_loop(host.release())


@pytest.mark.asyncio
async def test_missing_identity_file(sshd, tmp_path):
    missing = tmp_path / "no_such_key"
    msg = await connect_fails(target_of(sshd, identity_file=str(missing)))
    assert f"cannot use identity_file {str(missing)!r}" in msg
