"""The argv fallback: a frontend that ignores provisioners runs the relay, which runs the type.

The "plain" kernelspec is a bridged one with its ``kernel_provisioner`` stanza
removed, which is what VS Code and jupyter_client < 7 see: they run ``argv``
(``python -m kernel_hub_jupyter.relay --type ... -f {connection_file}``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_hub_jupyter.relay import DELIM, Resigner

from kernel_hub.testing import pid_alive, wait_pid_gone

# ---- pure logic ----


def sign(key: bytes, parts: list[bytes]) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p)
    return h.hexdigest().encode()


def test_resigner_checks_the_sender_key_and_signs_with_the_receiver_key():
    body = [b'{"msg_id": "1"}', b"{}", b"{}", b'{"code": "1"}']
    frames = [b"client-id", DELIM, sign(b"front", body), *body, b"buffer"]
    out = Resigner(b"front", b"kernel")(frames)
    assert out == [b"client-id", DELIM, sign(b"kernel", body), *body, b"buffer"]
    bad = Resigner(b"front", b"kernel")
    assert bad([b"id", DELIM, sign(b"wrong", body), *body]) is None
    assert bad([b"no delimiter"]) is None
    assert bad.dropped == 2 and "dropped=2" in repr(bad)
    unsigned = Resigner(b"", b"kernel")([DELIM, b"", *body])
    assert unsigned == [DELIM, sign(b"kernel", body), *body]


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


def relays() -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", "kernel_hub_jupyter.relay"], capture_output=True, text=True
    ).stdout
    return [int(p) for p in out.split() if int(p) != os.getpid()]


@pytest.mark.integration
def test_jupyter_run_without_provisioner_runs_code_on_the_bridged_type(plain_spec, tmp_path):
    script = tmp_path / "a.py"
    script.write_text("import os, sys\nprint('hello from', os.getpid(), sys.argv[0])\n")
    before = set(relays())
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
    assert set(relays()) <= before


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
