"""The nanny's lease and limits: a nanny whose hosts are gone ends; floods cost it little.

Every nanny here runs a kernel that would never end by itself (a ``sleep``, no
parent watch like ipykernel's), so a nanny that did not end it would leak it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import zmq

from kernel_hub.contract.errors import KernelHubError
from kernel_hub.managers.remote import NannyManager
from kernel_hub.nanny import DELIM
from kernel_hub.testing import NannyProcess, pid_alive, start_nanny, wait_pid_gone
from kernel_hub.wire.session import Session

pytestmark = pytest.mark.integration

TIMEOUT = 30
#: A kernel that runs for ten minutes unless killed: only the nanny can end it in time.
SLEEPER = json.dumps([sys.executable, "-c", "import time; time.sleep(600)"])
LEASE = 2.0


@pytest.fixture
def nannies() -> Iterator[list[NannyProcess]]:
    """Started nannies; each is stopped after the test, and its kernel checked gone."""
    started: list[NannyProcess] = []
    yield started
    for nanny in started:
        nanny.stop()
        assert wait_pid_gone(nanny.kernel_pid, TIMEOUT), f"{nanny!r}'s kernel outlived the test"


@pytest.fixture
def log_file(tmp_path):
    with open(tmp_path / "nanny.log", "wb") as f:
        yield f


def lease_nanny(nannies, *args: str, stderr=None, env=None) -> NannyProcess:
    nanny = start_nanny("--argv", SLEEPER, *args, stderr=stderr, env=env)
    nannies.append(nanny)
    return nanny


def assert_all_gone(nanny: NannyProcess, timeout: float = TIMEOUT) -> None:
    """The nanny ended on its own, and took its kernel and work dir (with the key) along."""
    assert nanny.proc.wait(timeout) == 0
    assert wait_pid_gone(nanny.kernel_pid, timeout)
    assert not os.path.exists(nanny.workdir)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


# ---- the lease ----


def test_lease_ends_a_nanny_that_no_host_ever_connects_to(nannies, log_file, tmp_path):
    nanny = lease_nanny(nannies, "--lease", str(LEASE), stderr=log_file)
    assert_all_gone(nanny)
    log = (tmp_path / "nanny.log").read_text()
    assert "no host connected for 2 s (the lease)" in log


def test_lease_from_the_environment(nannies):
    env = {**os.environ, "KERNEL_HUB_NANNY_LEASE": str(LEASE)}
    nanny = lease_nanny(nannies, env=env)
    assert_all_gone(nanny)


def test_a_bad_lease_is_a_handshake_error():
    with pytest.raises(RuntimeError, match="the lease must be a positive number of seconds"):
        start_nanny("--argv", SLEEPER, "--lease", "0")
    env = {**os.environ, "KERNEL_HUB_NANNY_LEASE": "soon"}
    with pytest.raises(RuntimeError, match="KERNEL_HUB_NANNY_LEASE='soon' is not a number"):
        start_nanny("--argv", SLEEPER, env=env)


@pytest.mark.asyncio
async def test_a_connected_manager_holds_the_lease_a_reattach_renews_it(nannies):
    nanny = lease_nanny(nannies, "--lease", str(LEASE))
    manager = NannyManager(nanny.connection_info, {"nanny_pid": nanny.nanny_pid})
    waiter = asyncio.ensure_future(manager.wait())  # a host watching its kernel, as the hub does
    try:
        assert await manager.is_alive()
        # Three leases long, the nanny keeps its kernel: a host is connected.
        assert not await asyncio.to_thread(wait_pid_gone, nanny.nanny_pid, 3 * LEASE)
        assert not waiter.done()
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        manager.close()  # the host lets go without shutting the kernel down
    # A re-attach within the grace period renews the lease ...
    again = NannyManager(nanny.connection_info, {"nanny_pid": nanny.nanny_pid})
    try:
        assert await again.is_alive()
        waiter = asyncio.ensure_future(again.wait())
        assert not await asyncio.to_thread(wait_pid_gone, nanny.nanny_pid, 2 * LEASE)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    finally:
        again.close()
    # ... and once nobody is connected any more, the nanny ends everything by itself.
    await asyncio.to_thread(assert_all_gone, nanny)


@pytest.mark.asyncio
async def test_files_the_host_gave_the_nanny_go_when_its_lease_runs_out(nannies, tmp_path):
    nanny = lease_nanny(nannies, "--lease", str(LEASE))
    owned, kept, target = tmp_path / "kernel-hub-x.json", tmp_path / "link", tmp_path / "other"
    owned.write_text("{}")
    target.write_text("not the nanny's to remove")
    kept.symlink_to(target)
    manager = NannyManager(nanny.connection_info, {"nanny_pid": nanny.nanny_pid})
    try:
        await manager.own_file(str(owned))
        await manager.own_file(str(kept))  # a link: neither it nor its target is removed
        with pytest.raises(KernelHubError, match="own_file needs an absolute 'path'"):
            await manager._request("own_file", path="relative.json")
    finally:
        manager.close()
    await asyncio.to_thread(assert_all_gone, nanny)
    assert not owned.exists()
    assert kept.is_symlink() and target.read_text() == "not the nanny's to remove"


HOLDER = textwrap.dedent(
    """
    import sys, zmq
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(sys.argv[1])
    sock.recv_multipart()  # the nanny's welcome: connected
    print("connected", flush=True)
    sys.stdin.read()
    """
)


def test_a_host_that_stops_answering_loses_the_lease(nannies, log_file, tmp_path):
    # A host frozen (SIGSTOP), or whose machine or network went away, keeps its TCP
    # connection open but answers no heartbeat: the nanny drops it, and the lease runs out.
    nanny = lease_nanny(nannies, "--lease", str(LEASE), stderr=log_file)
    url = f"tcp://127.0.0.1:{nanny.connection_info['nanny_events_port']}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"connected\n"
        assert not wait_pid_gone(nanny.nanny_pid, 2 * LEASE)  # held while it answers
        holder.send_signal(signal.SIGSTOP)
        assert_all_gone(nanny)
        assert holder.poll() is None  # it was the nanny that let go, not the host
    finally:
        holder.kill()
        holder.wait()
        for stream in (holder.stdin, holder.stdout):
            if stream is not None:
                stream.close()


def test_the_lease_holds_in_daemon_mode_too(nannies):
    nanny = lease_nanny(nannies, "--daemon", "--lease", str(LEASE))
    assert nanny.proc.wait(TIMEOUT) == 0  # the parent relayed the handshake
    assert wait_pid_gone(nanny.nanny_pid, TIMEOUT)
    assert wait_pid_gone(nanny.kernel_pid, TIMEOUT)
    assert not os.path.exists(nanny.workdir)


# ---- limits on the control and event sockets ----


def test_a_300_mb_frame_is_refused_before_it_is_read(nannies):
    nanny = lease_nanny(nannies)
    before = rss_kib(nanny.nanny_pid)
    ctx = zmq.Context.instance()
    dealer = ctx.socket(zmq.DEALER)
    dealer.linger = 0
    monitor = dealer.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        dealer.connect(f"tcp://127.0.0.1:{nanny.connection_info['nanny_control_port']}")
        dealer.send(memoryview(bytearray(300 * 1024 * 1024)), copy=False)
        # The nanny drops the connection at the frame's size header.
        assert monitor.poll(TIMEOUT * 1000), "the nanny did not drop the connection"
    finally:
        dealer.disable_monitor()
        monitor.close()
        dealer.close()
    after = rss_kib(nanny.nanny_pid)
    print(f"nanny RSS {before} KiB before, {after} KiB after a 300 MB frame")
    assert after - before < 10 * 1024
    # And it still serves its hosts.
    session = Session(nanny.connection_info["key"])
    assert ping(nanny, session)["status"] == "ok"


def ping(nanny: NannyProcess, session: Session, dealer: zmq.Socket | None = None) -> dict:
    """Send ``ping`` (on *dealer*, after what it sent before, or on a new connection)."""
    own = dealer is None
    if dealer is None:
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(f"tcp://127.0.0.1:{nanny.connection_info['nanny_control_port']}")
    try:
        request = session.msg("nanny_request", {"op": "ping"})
        dealer.send_multipart(session.serialize(request))
        while True:  # replies to earlier requests on this connection come first
            assert dealer.poll(TIMEOUT * 1000), "no answer to ping"
            reply = session.deserialize(dealer.recv_multipart())
            if reply.parent_header.get("msg_id") == request.header["msg_id"]:
                return dict(reply.content)
    finally:
        if own:
            dealer.close()


def test_a_flood_of_bad_requests_is_counted_and_summarised_not_logged_each(
    nannies, log_file, tmp_path
):
    nanny = lease_nanny(nannies, stderr=log_file)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    session = Session(nanny.connection_info["key"])
    n = 20_000
    try:
        dealer.connect(f"tcp://127.0.0.1:{nanny.connection_info['nanny_control_port']}")
        for i in range(n):
            bad = [DELIM, b"0" * 64, b"{}", b"{}", b"{}", json.dumps({"op": i}).encode()]
            dealer.send_multipart(bad if i % 2 else [b"garbage"])
        # Requests on one connection are served in order: once ping answers, every bad
        # one has been seen.
        assert ping(nanny, session, dealer)["bad_signatures"] == n
    finally:
        dealer.close()
    nanny.stop()
    lines = (tmp_path / "nanny.log").read_text().splitlines()
    drops = [line for line in lines if "dropped" in line]
    print(f"{len(drops)} log lines for {n} dropped requests: {drops}")
    assert 1 <= len(drops) <= 3
    assert "dropped a request" in drops[0]
    assert f"{n} so far" in drops[-1]
    assert "invalid signature" in drops[-1] and "not a Jupyter message" in drops[-1]


def test_a_flood_of_subscriptions_gets_few_welcomes(nannies):
    nanny = lease_nanny(nannies)
    ctx = zmq.Context.instance()
    url = f"tcp://127.0.0.1:{nanny.connection_info['nanny_events_port']}"
    listener = ctx.socket(zmq.SUB)
    listener.setsockopt(zmq.SUBSCRIBE, b"nanny_welcome")
    flood = ctx.socket(zmq.XSUB)
    for sock in (listener, flood):
        sock.linger = 0
        sock.connect(url)
    session = Session(nanny.connection_info["key"])
    try:
        assert listener.poll(TIMEOUT * 1000)  # its own welcome: the subscription is live
        listener.recv_multipart()
        n = 5000
        for _ in range(n):
            flood.send(b"\x01")
        # Once a request sent after the flood is answered, the flood has been read, at
        # the latest in the same poll round; a welcome still due goes out within 50 ms.
        assert ping(nanny, session)["status"] == "ok"
        welcomes = 0
        while listener.poll(1000):
            listener.recv_multipart()
            welcomes += 1
        print(f"{welcomes} welcomes for {n} subscriptions")
        assert 1 <= welcomes <= 20
    finally:
        for sock in (listener, flood):
            sock.close()
    assert pid_alive(nanny.nanny_pid)  # and the nanny still runs
