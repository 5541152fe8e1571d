"""Kernels not built on ipykernel's Python kernel, through their ``spec/<name>`` types.

Each is installed the way its README says (``.ci/run`` installs the packages; the
session fixture below installs kernelspecs into a temporary Jupyter path prefix) and
driven through the hub: launch, execute, complete, interrupt where the kernel
supports it, restart after ``kill -9``, shutdown. docs/kernels.md lists the quirks
these tests pin down.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from kernel_hub import KernelHub, KernelHubError, Message, RestartPolicy
from kernel_hub.conformance import execute_output, interrupt_busy_loop
from kernel_hub.testing import EventRecorder, require_service

pytestmark = [pytest.mark.thirdparty, pytest.mark.integration, pytest.mark.slow]

#: Generous: these kernels start in 1–5 s alone, and the machine is shared.
TIMEOUT = 120
FAST = RestartPolicy(limit=3, window=120, backoff_initial=0.1, backoff_max=0.5)


@dataclass(frozen=True)
class Kernel:
    """What the matrix needs to know about one third-party kernel."""

    name: str  #: the kernelspec name
    how: str  #: how to install it (the failure message when it is missing)
    code: str  #: prints 42
    complete: str  #: a prefix with at least one completion
    match: str  #: one of its completions
    busy: str | None  #: prints "go", then loops; None: the kernel cannot be interrupted
    interrupted: str = "error"  #: the execute_reply status after an interrupt
    #: Answers ``abort`` to every execute_request for a while after an error (tslab: 200 ms).
    aborts_after_error: bool = False


KERNELS = [
    Kernel(
        "xpython",
        "pip install xeus-python (the wheel ships its kernelspec)",
        "print(6*7)",
        # A module name: keyword and builtin completions come back empty in some environments
        # (seen with the Jupyter bridge's test extra installed), module names always answer.
        "import o",
        "os",
        None,  # SIGINT ends it (exit status 0); interrupt_request is ignored
    ),
    Kernel(
        "bash",
        "pip install bash_kernel",
        "echo $((6*7))",
        "ech",
        "echo",
        "echo go; while true; do :; done",
        interrupted="abort",
    ),
    Kernel(
        "calysto_scheme",
        "pip install calysto_scheme",
        "(display (* 6 7))",
        "(defi",
        "define",
        '(display "go") (newline) (define (spin) (spin)) (spin)',
    ),
    Kernel(
        "tslab",
        "npm install -g tslab",
        "console.log(6*7)",
        "console.lo",
        "log",
        'console.log("go"); while (true) {}',
        aborts_after_error=True,
    ),
    Kernel(
        "ir",
        "apt-get install r-cran-irkernel",
        "cat(6*7)",
        "prin",
        "print",
        'cat("go\\n"); repeat {}',
        interrupted="abort",
    ),
]


def _install_specs(prefix: Path) -> dict[str, str]:
    """Install each kernel's kernelspec into *prefix* as its README says; return the failures."""
    py = sys.executable
    failed: dict[str, str] = {}
    steps = {
        "bash": [py, "-m", "bash_kernel.install", "--prefix", str(prefix)],
        "calysto_scheme": [py, "-m", "calysto_scheme", "install", "--prefix", str(prefix)],
    }
    if shutil.which("tslab"):
        steps["tslab"] = ["tslab", "install", f"--python={py}", "--prefix", str(prefix)]
    else:
        failed["tslab"] = "the tslab command is not on PATH"
    if shutil.which("R"):
        r_prefix = str(prefix).replace("\\", "\\\\").replace('"', '\\"')
        steps["ir"] = ["R", "--vanilla", "-s", "-e", f'IRkernel::installspec(prefix="{r_prefix}")']
    else:
        failed["ir"] = "R is not installed"
    for name, argv in steps.items():
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            failed[name] = f"{' '.join(argv)} failed: {proc.stderr.strip()[-500:]}"
    return failed


@pytest.fixture(scope="session")
def thirdparty_specs() -> Iterator[dict[str, str]]:
    """Kernelspecs installed into a temporary prefix on ``JUPYTER_PATH``; yields the failures."""
    old = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="kh-kernels-") as tmp:
        failed = _install_specs(Path(tmp))
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            p for p in (str(Path(tmp) / "share" / "jupyter"), old) if p
        )
        try:
            yield failed
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


@pytest_asyncio.fixture
async def hub() -> KernelHub:  # type: ignore[misc]  # an async generator fixture
    async with KernelHub(config={}) as hub:
        yield hub
    assert not hub.kernels


async def _type_id(hub: KernelHub, k: Kernel, failed: dict[str, str]) -> str:
    ids = {t.id for t in await hub.find_kernel_types()}
    type_id = f"spec/{k.name}"
    why = failed.get(k.name, f"no kernelspec {k.name!r} on the Jupyter path")
    require_service(f"the {k.name} kernel", type_id in ids, f"{k.how} ({why})")
    return type_id


@pytest.mark.asyncio
@pytest.mark.timeout(600)
@pytest.mark.parametrize("k", KERNELS, ids=[k.name for k in KERNELS])
async def test_launch_execute_complete_interrupt_shutdown(k, hub, thirdparty_specs):
    type_id = await _type_id(hub, k, thirdparty_specs)
    kernel = await hub.launch(type_id, restart=False)
    try:
        async with _client(kernel) as c:
            info = await c.kernel_info(timeout=TIMEOUT)
            assert info.content.get("status", "ok") == "ok"  # tslab's reply has no status
            assert info.content["language_info"]["name"]
            assert info.content.get("implementation") != "ipython"
            reply, text = await execute_output(c, k.code, timeout=TIMEOUT)
            assert reply["status"] == "ok", reply
            assert text.strip() == "42"
            comp = await c.complete(k.complete, timeout=TIMEOUT)
            assert comp.content["status"] == "ok"
            assert any(k.match in m for m in comp.content["matches"]), comp.content
            if k.busy is not None:
                reply_msg = await interrupt_busy_loop(
                    c, k.busy, timeout=TIMEOUT, interrupt_timeout=TIMEOUT
                )
                assert reply_msg.content["status"] == k.interrupted, reply_msg.content
                # Still the same process, and still answering.
                reply, text = await _execute_after_error(c, k)
                assert reply["status"] == "ok" and text.strip() == "42"
            assert await kernel.manager.is_alive()
        assert c.drops.counts == {}, c.drops  # every message it sent was well-formed
    finally:
        await kernel.shutdown()
    assert not await kernel.manager.is_alive()


@pytest.mark.asyncio
@pytest.mark.timeout(600)
@pytest.mark.parametrize("k", KERNELS, ids=[k.name for k in KERNELS])
async def test_restart_after_kill(k, hub, thirdparty_specs):
    type_id = await _type_id(hub, k, thirdparty_specs)
    rec = EventRecorder(hub)
    kernel = await hub.launch(type_id, restart=FAST)
    try:
        async with _client(kernel) as c:
            await c.kernel_info(timeout=TIMEOUT)
            old_pid = kernel.manager.pid
            os.kill(old_pid, signal.SIGKILL)
            died = await rec.wait_for("died", kernel.id, timeout=TIMEOUT)
            assert died.data == {"exit_status": -signal.SIGKILL}
            await rec.wait_for("restarted", kernel.id, timeout=TIMEOUT)
            assert kernel.manager.pid != old_pid
            # The same client follows the relaunched kernel.
            reply, text = await execute_output(c, k.code, timeout=TIMEOUT)
            assert reply["status"] == "ok" and text.strip() == "42"
    finally:
        await kernel.shutdown()
        rec.close()


def _client(kernel):
    client = kernel.client()
    client.ready_timeout = TIMEOUT  # some of these take seconds to answer on a loaded machine
    return client


async def _execute_after_error(c, k: Kernel):
    """Execute ``k.code``; for a kernel that aborts requests just after an error, until it runs."""
    loop = asyncio.get_running_loop()
    end = loop.time() + TIMEOUT
    while True:
        reply, text = await execute_output(c, k.code, timeout=TIMEOUT)
        if reply["status"] != "abort" or not k.aborts_after_error or loop.time() > end:
            return reply, text
        await asyncio.sleep(0.05)  # the kernel's own abort window (tslab: 200 ms) must pass


@pytest.mark.asyncio
@pytest.mark.timeout(600)
async def test_xeus_python_ignores_interrupt_request_and_exits_on_sigint(hub, thirdparty_specs):
    """Why the matrix does not interrupt xpython: the quirks of docs/kernels.md, pinned."""
    k = next(k for k in KERNELS if k.name == "xpython")
    kernel = await hub.launch(await _type_id(hub, k, thirdparty_specs), restart=False)
    try:
        async with _client(kernel) as c:
            go = asyncio.Event()

            def on_output(msg: Message) -> None:
                # "go" itself, not the first IOPub message (execute_input): xeus-python's
                # SIGINT handler calls exit(), which deadlocks when the signal lands in the
                # kernel's own malloc, as it can while the request is set up (docs/kernels.md).
                if msg.header["msg_type"] == "stream":
                    go.set()

            busy = asyncio.ensure_future(
                c.execute('print("go", flush=True)\nwhile True: pass', output_hook=on_output)
            )
            await asyncio.wait_for(go.wait(), TIMEOUT)
            reply = await c.request("interrupt_request", channel="control", timeout=TIMEOUT)
            assert reply.content["status"] == "ok"  # answered, and yet:
            assert not busy.done()
            await kernel.manager.interrupt()  # SIGINT
            assert await asyncio.wait_for(kernel.manager.wait(), TIMEOUT) == 0
            busy.cancel()
            await asyncio.gather(busy, return_exceptions=True)
    finally:
        await kernel.shutdown()


@pytest.mark.asyncio
@pytest.mark.timeout(600)
async def test_a_kernel_without_subshells_is_refused_at_once(hub, thirdparty_specs):
    """xeus-python 0.19 lists no "kernel subshells": subshell calls fail before any is sent."""
    k = next(k for k in KERNELS if k.name == "xpython")
    kernel = await hub.launch(await _type_id(hub, k, thirdparty_specs), restart=False)
    try:
        async with _client(kernel) as c:
            # Protocol 5.6: it greets every IOPub subscriber, so readiness needed no nudge.
            assert c.iopub_nudges == 0
            assert "kernel subshells" not in await c.supported_features(timeout=TIMEOUT)
            sent = set()
            c.on(
                "iopub", lambda m: sent.add(tuple(map(m.parent_header.get, ("msg_type", "msg_id"))))
            )
            for call in (
                c.create_subshell(timeout=TIMEOUT),
                c.list_subshells(timeout=TIMEOUT),
                c.delete_subshell("some-id", timeout=TIMEOUT),
                c.execute("print(1)", subshell_id="some-id", timeout=TIMEOUT),
                c.complete("impo", subshell_id="some-id", timeout=TIMEOUT),
            ):
                with pytest.raises(KernelHubError, match=r"xeus-python .*has no subshells"):
                    await call
            # None of them reached the kernel: of its IOPub traffic, one execution is ours.
            assert (await c.execute("print(1)", timeout=TIMEOUT)).content["status"] == "ok"
            parents = [t for t, _ in sent if t not in (None, "kernel_info_request")]
            assert parents == ["execute_request"]
    finally:
        await kernel.shutdown()
