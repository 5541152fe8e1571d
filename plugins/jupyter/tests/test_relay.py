"""The argv fallback: a frontend that ignores provisioners runs the relay, which runs the type.

The "plain" kernelspec is a bridged one with its ``kernel_provisioner`` stanza
removed, which is what VS Code and jupyter_client < 7 see: they run ``argv``
(``python -m kernel_hub_jupyter.relay --type ... -f {connection_file}``).
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kernel_hub_jupyter.relay import DELIM, Resigner

from kernel_hub.testing import (
    PipedConsole,
    descendants,
    free_ports,
    hmac_sha256,
    pid_alive,
    processes_with_env,
    wait_pid_gone,
)

# ---- pure logic ----


def test_resigner_checks_the_sender_key_and_signs_with_the_receiver_key():
    body = [b'{"msg_id": "1"}', b"{}", b"{}", b'{"code": "1"}']
    frames = [b"client-id", DELIM, hmac_sha256(b"front", body), *body, b"buffer"]
    out = Resigner(b"front", b"kernel")(frames)
    assert out == [b"client-id", DELIM, hmac_sha256(b"kernel", body), *body, b"buffer"]
    bad = Resigner(b"front", b"kernel")
    assert bad([b"id", DELIM, hmac_sha256(b"wrong", body), *body]) is None
    assert bad([b"no delimiter"]) is None
    assert bad.dropped == 2 and "dropped=2" in repr(bad)
    unsigned = Resigner(b"", b"kernel")([DELIM, b"", *body])
    assert unsigned == [DELIM, hmac_sha256(b"kernel", body), *body]


# ---- real frontends running argv ----


@pytest.fixture
def plain_spec(bridged, tmp_path) -> Path:
    """A kernels dir with ``plain``: the bridged Python spec without its provisioner stanza."""
    spec = json.loads(
        (bridged.prefix / "share/jupyter/kernels" / bridged.python / "kernel.json").read_text()
    )
    del spec["metadata"]["kernel_provisioner"]
    (tmp_path / "kernels" / "plain").mkdir(parents=True)
    (tmp_path / "kernels" / "plain" / "kernel.json").write_text(json.dumps(spec))
    return tmp_path / "kernels"


def relays(jupyter_path: Path) -> list[int]:
    """The relay processes started with *jupyter_path* as ``JUPYTER_PATH`` (this test's only)."""
    found = []
    for pid in processes_with_env(f"JUPYTER_PATH={jupyter_path}"):
        with contextlib.suppress(OSError):
            if b"kernel_hub_jupyter.relay" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
    return found


@pytest.mark.integration
def test_jupyter_run_without_provisioner_runs_code_on_the_bridged_type(plain_spec, tmp_path):
    script = tmp_path / "a.py"
    script.write_text("import os, sys\nprint('hello from', os.getpid(), sys.argv[0])\n")
    out = subprocess.run(
        [sys.executable, "-m", "jupyter_client.runapp", "--kernel=plain", str(script)],
        env={**os.environ, "JUPYTER_PATH": str(plain_spec.parent)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hello from ")
    pid = int(out.stdout.split()[2])
    assert wait_pid_gone(pid, 30), "the kernel outlived the relay"
    left = [p for p in relays(plain_spec.parent) if not wait_pid_gone(p, 30)]
    assert not left, f"relay processes {left} outlived 'jupyter run'"


@pytest.mark.integration
def test_kernel_manager_on_argv_interrupt_input_and_shutdown(plain_spec):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from jupyter_client.provisioning import LocalProvisioner

    km = KernelManager(
        kernel_name="plain", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(plain_spec)])
    )
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        assert isinstance(km.provisioner, LocalProvisioner)  # jupyter runs argv: the relay
        kc.wait_for_ready(timeout=120)
        outputs: list[str] = []

        def hook(msg):
            if msg["msg_type"] == "stream":
                outputs.append(msg["content"]["text"])

        reply = kc.execute_interactive(
            "import os; print(os.getpid()); name = input('name? '); print('hi', name)",
            output_hook=hook,
            stdin_hook=lambda msg: kc.input("relay"),
            timeout=60,
        )
        assert reply["content"]["status"] == "ok"
        kernel_pid = int(outputs[0])
        assert kernel_pid != km.provisioner.pid  # the relay is not the kernel
        assert "".join(outputs[1:]) == "hi relay\n"
        msg_id = kc.execute("import time; print('sleeping', flush=True); time.sleep(600)")
        wait_stream(kc)  # the code runs: ipykernel ignores SIGINT before that
        km.interrupt_kernel()  # SIGINT to the relay, which interrupts the kernel
        reply = kc.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        relay_pid = km.provisioner.pid
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert wait_pid_gone(kernel_pid, 30) and not pid_alive(relay_pid)


@pytest.mark.integration
def test_relay_killed_outright_takes_its_kernel_along(plain_spec):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    km = KernelManager(
        kernel_name="plain", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(plain_spec)])
    )
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        reply = kc.execute(
            "import os", user_expressions={"p": "os.getpid()"}, reply=True, timeout=60
        )
        kernel_pid = int(reply["content"]["user_expressions"]["p"]["data"]["text/plain"])
        os.kill(km.provisioner.pid, signal.SIGKILL)
        assert wait_pid_gone(kernel_pid, 30), "the kernel outlived its killed relay"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def wait_stream(kc) -> None:
    """Return once the kernel's next stream output has arrived on IOPub."""
    while kc.get_iopub_msg(timeout=120)["msg_type"] != "stream":
        pass


# ---- an editor's raw kernel: VS Code's way, without jupyter_client ----


CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


class RawFrontend:
    """What VS Code's Jupyter extension does with a kernelspec's ``argv`` ("raw kernel").

    It writes the connection file itself (free ports, a random key), spawns
    ``argv`` with ``{connection_file}`` substituted, and speaks ZeroMQ itself:
    DEALER sockets for shell, control and stdin, a SUB for IOPub, and its own
    HMAC-SHA256 signatures. No jupyter_client here.
    """

    def __init__(self, kernel_dir: Path, workdir: Path) -> None:
        import secrets

        import zmq

        spec = json.loads((kernel_dir / "kernel.json").read_text())
        self.interrupt_mode = spec.get("interrupt_mode", "signal")
        ports = free_ports(5)
        self.key = secrets.token_hex(16).encode()
        info = {
            "transport": "tcp",
            "ip": "127.0.0.1",
            "signature_scheme": "hmac-sha256",
            "key": self.key.decode(),
            **{f"{c}_port": p for c, p in zip(CHANNELS, ports, strict=True)},
            "kernel_name": kernel_dir.name,
        }
        self.connection_file = workdir / "kernel-raw.json"
        self.connection_file.write_text(json.dumps(info))
        self.connection_file.chmod(0o600)
        argv = [a.replace("{connection_file}", str(self.connection_file)) for a in spec["argv"]]
        env = {**os.environ, **spec.get("env", {})}
        env.pop("JPY_PARENT_PID", None)  # VS Code does not set it
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        self.session = uuid.uuid4().hex
        self.ctx = zmq.Context()
        self.sockets = {}
        for channel, kind in (("shell", zmq.DEALER), ("control", zmq.DEALER), ("iopub", zmq.SUB)):
            sock = self.ctx.socket(kind)
            sock.linger = 0
            if kind == zmq.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            sock.connect(f"tcp://127.0.0.1:{info[f'{channel}_port']}")
            self.sockets[channel] = sock

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.ctx.term()
        if self.proc.poll() is None:  # what VS Code does last: kill the tree
            for pid in [self.proc.pid, *descendants(self.proc.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)
        self.connection_file.unlink(missing_ok=True)

    def send(self, channel: str, msg_type: str, content: dict) -> str:
        msg_id = uuid.uuid4().hex
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "vscode",
            "session": self.session,
            "date": datetime.datetime.now(datetime.UTC).isoformat(),
            "version": "5.3",
        }
        parts = [json.dumps(p).encode() for p in (header, {}, {}, content)]
        self.sockets[channel].send_multipart([DELIM, hmac_sha256(self.key, parts), *parts])
        return msg_id

    def recv(self, channel: str, timeout: float) -> dict | None:
        """Return the next message on *channel* (its signature checked), or None at *timeout*."""
        sock = self.sockets[channel]
        if not sock.poll(timeout * 1000):
            return None
        frames = sock.recv_multipart()
        i = frames.index(DELIM)
        signature, parts = frames[i + 1], frames[i + 2 : i + 6]
        assert hmac.compare_digest(signature, hmac_sha256(self.key, parts)), (
            "a badly signed message"
        )
        header, parent, _metadata, content = (json.loads(p) for p in parts)
        return {"header": header, "parent": parent, "content": content}

    def reply(self, channel: str, msg_id: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv(channel, left)
            if msg is not None and msg["parent"].get("msg_id") == msg_id:
                return msg
        raise AssertionError(f"no {channel} reply to {msg_id} within {timeout} s")

    def connect(self, timeout: float = 120.0) -> dict:
        """Ask kernel_info until it is answered and its IOPub status arrives (VS Code's wait).

        A SUB socket misses what is published before its subscription has
        reached the publisher, so the first answers may come without IOPub.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg_id = self.send("shell", "kernel_info_request", {})
            reply = self.reply("shell", msg_id, max(1.0, deadline - time.monotonic()))
            seen = time.monotonic() + 2.0
            while (left := min(seen, deadline) - time.monotonic()) > 0:
                msg = self.recv("iopub", left)
                if msg is not None and msg["parent"].get("msg_id") == msg_id:
                    return reply["content"]
        raise AssertionError(f"kernel_info without IOPub for {timeout} s")

    def outputs(self, msg_id: str, timeout: float = 120.0) -> list[str]:
        """Return the stream texts of request *msg_id*, in order, up to its idle status."""
        texts = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv("iopub", left)
            if msg is None or msg["parent"].get("msg_id") != msg_id:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                texts.append(msg["content"]["text"])
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return texts
        raise AssertionError(f"request {msg_id} not idle within {timeout} s: {texts}")

    def wait_stream(self, msg_id: str, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            msg = self.recv("iopub", left)
            if (
                msg is not None
                and msg["parent"].get("msg_id") == msg_id
                and msg["header"]["msg_type"] == "stream"
            ):
                return str(msg["content"]["text"])
        raise AssertionError(f"no output of {msg_id} within {timeout} s")


def raw_spec(plain_spec: Path, interrupt_mode: str) -> Path:
    spec_dir = plain_spec / "plain"
    spec = json.loads((spec_dir / "kernel.json").read_text())
    spec["interrupt_mode"] = interrupt_mode
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return spec_dir


#: Prints what the test checks: the kernel's pid and its own connection file (kernel_hub's).
WHO = (
    "import os, ipykernel.connect\n"
    "print(os.getpid())\n"
    "print(ipykernel.connect.get_connection_file())"
)


@pytest.mark.integration
@pytest.mark.parametrize("interrupt_mode", ["signal", "message"])
def test_vscode_style_raw_launch_execute_interrupt_and_shutdown(
    plain_spec, tmp_path, interrupt_mode
):
    front = RawFrontend(raw_spec(plain_spec, interrupt_mode), tmp_path)
    try:
        info = front.connect()
        assert info["status"] == "ok" and info["language_info"]["name"] == "python"
        msg_id = front.send("shell", "execute_request", {"code": WHO, "silent": False})
        kernel_pid, kernel_file = "".join(front.outputs(msg_id)).split()
        kernel_pid = int(kernel_pid)
        assert kernel_pid != front.proc.pid and kernel_pid in descendants(front.proc.pid)
        assert front.reply("shell", msg_id)["content"]["status"] == "ok"
        code = "for i in range(5):\n    print(i, flush=True)"
        msg_id = front.send("shell", "execute_request", {"code": code, "silent": False})
        assert "".join(front.outputs(msg_id)) == "0\n1\n2\n3\n4\n"
        assert front.reply("shell", msg_id)["content"]["status"] == "ok"
        code = "import time; print('sleeping', flush=True); time.sleep(600)"
        msg_id = front.send("shell", "execute_request", {"code": code, "silent": False})
        assert front.wait_stream(msg_id) == "sleeping\n"  # ipykernel ignores SIGINT before
        if front.interrupt_mode == "signal":
            front.proc.send_signal(signal.SIGINT)
        else:
            interrupt = front.send("control", "interrupt_request", {})
            assert front.reply("control", interrupt, 60)["content"]["status"] == "ok"
        assert front.reply("shell", msg_id, 60)["content"]["ename"] == "KeyboardInterrupt"
        children = descendants(front.proc.pid)  # the kernel (kernel_hub's reaper is not a child)
        shutdown = front.send("control", "shutdown_request", {"restart": False})
        assert front.reply("control", shutdown, 60)["content"]["status"] == "ok"
        assert front.proc.wait(60) == 0, "the relay did not exit after shutdown_request"
        assert all(wait_pid_gone(pid, 60) for pid in [kernel_pid, *children])
        assert not os.path.exists(kernel_file)
    finally:
        front.close()


def reapers_of(host: int) -> list[int]:
    """Return the pids of kernel_hub's reaper helpers watching process *host*."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if args[1:4] == [b"-I", b"-S", b"-c"] and args[-2:] == [str(host).encode(), b""]:
                    found.append(int(entry))
    return [pid for pid in found if pid_alive(pid)]


@pytest.mark.integration
def test_vscode_style_tree_kill_leaves_nothing(plain_spec, tmp_path):
    """Closing the window: the editor kills the relay's process tree, with no shutdown_request.

    Unlike test_relay_killed_outright_takes_its_kernel_along (SIGKILL of the
    relay alone, whose reaper then ends the kernel), the kill reaches the
    kernel too. kernel_hub's reaper is not in the tree (issue #22 item 8): it
    removes the kernel's connection file (its key) and log, then exits.
    """
    front = RawFrontend(raw_spec(plain_spec, "signal"), tmp_path)
    kernel_file = ""
    try:
        front.connect()
        msg_id = front.send("shell", "execute_request", {"code": WHO, "silent": False})
        kernel_pid, kernel_file = "".join(front.outputs(msg_id)).split()
        tree = [front.proc.pid, *descendants(front.proc.pid)]
        assert int(kernel_pid) in tree and os.path.exists(kernel_file)
        reapers = reapers_of(front.proc.pid)
        assert len(reapers) == 1 and reapers[0] not in tree  # the tree kill cannot reach it
        for pid in tree:
            os.kill(pid, signal.SIGKILL)
        assert all(wait_pid_gone(pid, 60) for pid in tree), "a process outlived the tree kill"
        # The reaper acts when the relay's end closes its pipe: a bounded wait for its work.
        log_file = Path(kernel_file).with_suffix(".log")

        def left() -> list[str]:
            files = [f for f in (kernel_file, str(log_file)) if os.path.exists(f)]
            return files + [f"reaper {pid}" for pid in reapers_of(front.proc.pid)]

        deadline = time.monotonic() + 60
        while left() and time.monotonic() < deadline:
            time.sleep(0.05)  # another process's work: nothing to wait on
        assert left() == [], "the connection file (its key), the log or the reaper is left"
    finally:
        front.close()
        if kernel_file:  # what the reaper would have removed: the file and the kernel's log
            Path(kernel_file).unlink(missing_ok=True)
            Path(kernel_file).with_suffix(".log").unlink(missing_ok=True)


# ---- jupyter console on a spec without the provisioner ----


@pytest.mark.integration
@pytest.mark.timeout(600)  # above the console's own generous waits, so their message shows
def test_jupyter_console_without_provisioner_runs_code_on_the_bridged_type(plain_spec):
    console = PipedConsole(
        [sys.executable, "-m", "jupyter_console", "--kernel=plain", "--simple-prompt"],
        {**os.environ, "JUPYTER_PATH": str(plain_spec.parent)},
    )
    try:
        console.send("print(6*7)")
        at = console.wait_for("42\n")
        console.send("import os; print('kernel pid', os.getpid())")
        at = console.wait_for("kernel pid ", at)
        kernel_pid = int(console.output[at:].split()[0])
        started = descendants(console.proc.pid)  # the relay and its kernel (not its reaper)
        assert kernel_pid in started and len(started) >= 2  # jupyter runs argv: the relay
        console.send("exit")
        assert console.proc.wait(120) == 0, console.output[-3000:]
        left = [pid for pid in started if not wait_pid_gone(pid, 60)]
        assert not left, f"processes outlived jupyter console: {left}"
    finally:
        console.close()
