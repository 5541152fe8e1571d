"""Benchmark kernel_hub against jupyter_client and a hand-written raw pyzmq client.

Run from the repository root::

    uv run python bench/bench.py [--quick] [--json out.json]

Three variants run *interleaved* in one invocation (round-robin per sample, in
a rotating order) so that drift of the machine hits all of them alike:

``raw``
    :mod:`raw_client`: Popen + blocking pyzmq + hand-written HMAC; the limit.
``kernel_hub``
    ``KernelHub(...).launch("ipykernel/python3")`` and its async client.
``jupyter_client``
    ``AsyncKernelManager`` + ``AsyncKernelClient``, the established peer.

All three start the same argv (``sys.executable -m ipykernel_launcher -f
{connection_file}``) with the same environment (this process's, plus
``JPY_PARENT_PID``), which the run checks by reading ``/proc/<pid>/environ``
of one kernel per variant. Scenarios:

1. ``start_stop``: start → ready (kernel_info answered and IOPub delivered),
   cold (a new process each time); then shutdown (request → process gone).
2. ``execute``: ``execute("pass")`` round trips after a warm-up: latency
   median/p99 and client CPU per round trip (``time.process_time()`` around a
   block of round trips, so the event loop and every thread of this process
   count, until the process is idle again: work deferred past the reply counts).
3. ``iopub_flood``: ``print(i, flush=True)`` 20,000 times: client CPU, wall
   time, and every line must arrive.
4. ``concurrent``: 8 kernels started at once → all ready; then all shut down.
5. ``footprint``: RSS, thread and fd deltas of a fresh host process holding 8
   kernels with one connected client each, used once (``footprint.py``).

Remote kernels (Docker, SSH) get their own section below, not filled in yet.
Nothing is left behind: kernels run with a private ``JUPYTER_RUNTIME_DIR`` and
``IPYTHONDIR``; at the end the run checks that no process and no file of its
own remains.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import raw_client
import zmq
from footprint import helper_processes, snapshot

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "latest.json"

#: The one kernel command line all variants run.
KERNEL_ARGV = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
#: The jupyter_client kernelspec name written into the private kernelspec dir.
JC_KERNEL_NAME = "kh-bench-python"
#: The kernel_hub kernel type whose argv is KERNEL_ARGV.
KH_TYPE_ID = "ipykernel/python3"

VARIANTS = ("raw", "kernel_hub", "jupyter_client")
SCENARIOS = ("start_stop", "execute", "iopub_flood", "concurrent", "footprint")

FULL = {
    "start_n": 30,
    "exec_warmup": 50,
    "exec_block": 50,
    "exec_rounds": 20,
    "flood_lines": 20_000,
    "flood_rounds": 5,
    "concurrent_kernels": 8,
    "concurrent_rounds": 9,
    "footprint_kernels": 8,
    "footprint_reps": 3,
}
QUICK = {
    "start_n": 2,
    "exec_warmup": 5,
    "exec_block": 10,
    "exec_rounds": 2,
    "flood_lines": 2_000,
    "flood_rounds": 1,
    "concurrent_kernels": 2,
    "concurrent_rounds": 1,
    "footprint_kernels": 2,
    "footprint_reps": 1,
}

EXEC_CODE = "pass"
FLOOD_CODE = "for i in range({n}):\n    print(i, flush=True)"
TIMEOUT = 120.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def kernel_env() -> dict[str, str]:
    """Return the environment every variant gives its kernel (jupyter_client's launcher rule)."""
    env = dict(os.environ)
    env["JPY_PARENT_PID"] = str(os.getpid())
    return env


def rotated(items: Sequence[Any], r: int) -> list[Any]:
    """Return *items* rotated by *r*, so no variant always runs first or last."""
    k = r % len(items)
    return list(items[k:]) + list(items[:k])


#: Launch failures seen during the run (a failed sample is retried, and reported here).
FAILURES: list[dict[str, str]] = []


def retrying(v, what: str, fn: Callable[[], Any], attempts: int = 3) -> Any:
    """Return ``fn()``; on failure clean up *v*'s kernels, record the error and retry.

    A benchmark sample must not silently hide a failure, nor let one flaky
    launch throw away the whole run: every failure lands in the JSON's
    ``checks.launch_failures``.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            FAILURES.append({"variant": v.name, "scenario": what, "error": msg[-1500:]})
            log(f"    {v.name} failed in {what} (attempt {attempt}/{attempts}): {msg[:300]}")
            v.abort()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


#: Settling: the loop keeps running until the process has used < 0.5 ms CPU in 50 ms.
SETTLE_STEP, SETTLE_IDLE_CPU, SETTLE_MAX = 0.05, 0.0005, 5.0


def settle() -> None:
    """Wait until this process is idle, so work deferred past the reply is counted too."""
    last = time.process_time()
    for _ in range(int(SETTLE_MAX / SETTLE_STEP)):
        time.sleep(SETTLE_STEP)
        now = time.process_time()
        if now - last < SETTLE_IDLE_CPU:
            return
        last = now


async def settle_async() -> None:
    """:func:`settle` for an event loop: callbacks still queued (a lagging IOPub reader) run."""
    last = time.process_time()
    for _ in range(int(SETTLE_MAX / SETTLE_STEP)):
        await asyncio.sleep(SETTLE_STEP)
        now = time.process_time()
        if now - last < SETTLE_IDLE_CPU:
            return
        last = now


# --------------------------------------------------------------------------------------------
# variants: one class each, the same methods; async ones run on one persistent loop and time
# themselves inside the coroutine, so run_until_complete's own cost is not counted.
# --------------------------------------------------------------------------------------------


class RawVariant:
    """The limit: :mod:`raw_client`, blocking, no event loop."""

    name = "raw"

    def __init__(self, loop: asyncio.AbstractEventLoop, workdir: Path) -> None:
        self.runtime_dir = os.environ["JUPYTER_RUNTIME_DIR"]
        self.live: set[raw_client.RawKernel] = set()

    def _new(self) -> raw_client.RawKernel:
        k = raw_client.RawKernel(KERNEL_ARGV, env=kernel_env(), runtime_dir=self.runtime_dir)
        self.live.add(k)
        return k

    def start(self):
        c0, t0 = time.process_time(), time.perf_counter()
        k = self._new()
        k.launch()
        k.wait_ready(TIMEOUT)
        return k, time.perf_counter() - t0, time.process_time() - c0

    def stop(self, k) -> float:
        t0 = time.perf_counter()
        k.shutdown()
        dt = time.perf_counter() - t0
        self.live.discard(k)
        return dt

    def start_many(self, n: int):
        t0 = time.perf_counter()
        ks = [self._new() for _ in range(n)]
        for k in ks:
            k.launch()
        raw_client.wait_all_ready(ks, timeout=TIMEOUT)
        return ks, time.perf_counter() - t0

    def stop_many(self, ks) -> float:
        t0 = time.perf_counter()
        raw_client.shutdown_all(ks)
        dt = time.perf_counter() - t0
        self.live.difference_update(ks)
        return dt

    def pid(self, k) -> int:
        return k.pid

    def connect(self, k):
        return k

    def disconnect(self, session) -> None:
        pass

    def pause(self, session) -> None:
        pass

    def resume(self, session) -> None:
        pass

    def exec_block(self, k, n: int):
        lat = []
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            k.execute(EXEC_CODE, timeout=TIMEOUT)
            lat.append(time.perf_counter() - t0)
        wall = time.perf_counter() - w0
        settle()
        return lat, time.process_time() - c0, wall

    def flood(self, k, code: str):
        texts: list[str] = []
        count = [0]

        def on_output(msg_type, content):
            if msg_type == "stream":
                count[0] += 1
                texts.append(content["text"])

        c0, t0 = time.process_time(), time.perf_counter()
        k.execute(code, on_output=on_output, timeout=TIMEOUT)
        wall = time.perf_counter() - t0
        settle()
        return wall, time.process_time() - c0, texts, count[0]

    def abort(self) -> None:
        for k in list(self.live):
            k.close()
        self.live.clear()


class LoopVariant:
    """The timing shared by the variants on an event loop.

    A subclass says how to start, stop and execute on one kernel (``_start_one``,
    ``_stop_one``, ``_execute``: each returns an awaitable); the clocks around
    those calls, and so what is measured, are the same for every variant.
    """

    loop: asyncio.AbstractEventLoop

    def _start_one(self) -> Awaitable[Any]:
        raise NotImplementedError

    def _stop_one(self, h) -> Awaitable[None]:
        raise NotImplementedError

    def _execute(self, session, code: str, texts: list[str] | None) -> Awaitable[Any]:
        """Execute *code* to its reply; append its stream texts to *texts* unless None."""
        raise NotImplementedError

    def start(self):
        async def go():
            c0, t0 = time.process_time(), time.perf_counter()
            h = await self._start_one()
            return h, time.perf_counter() - t0, time.process_time() - c0

        return self.loop.run_until_complete(go())

    def stop(self, h) -> float:
        async def go():
            t0 = time.perf_counter()
            await self._stop_one(h)
            return time.perf_counter() - t0

        return self.loop.run_until_complete(go())

    def start_many(self, n: int):
        async def go():
            t0 = time.perf_counter()
            hs = await asyncio.gather(
                *(self._start_one() for _ in range(n)), return_exceptions=True
            )
            dt = time.perf_counter() - t0
            for h in hs:
                if isinstance(h, BaseException):
                    raise h  # the started ones stay tracked for abort()
            return hs, dt

        return self.loop.run_until_complete(go())

    def stop_many(self, hs) -> float:
        async def go():
            t0 = time.perf_counter()
            await asyncio.gather(*(self._stop_one(h) for h in hs))
            return time.perf_counter() - t0

        return self.loop.run_until_complete(go())

    def exec_block(self, session, n: int):
        async def go():
            lat = []
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                t0 = time.perf_counter()
                await self._execute(session, EXEC_CODE, None)
                lat.append(time.perf_counter() - t0)
            wall = time.perf_counter() - w0
            await settle_async()
            return lat, time.process_time() - c0, wall

        return self.loop.run_until_complete(go())

    def flood(self, session, code: str):
        texts: list[str] = []

        async def go():
            c0, t0 = time.process_time(), time.perf_counter()
            await self._execute(session, code, texts)
            wall = time.perf_counter() - t0
            await settle_async()
            return wall, time.process_time() - c0, texts, len(texts)

        return self.loop.run_until_complete(go())


class KernelHubVariant(LoopVariant):
    """kernel_hub: ``KernelHub.launch`` + ``AsyncKernelClient``."""

    name = "kernel_hub"

    def __init__(self, loop: asyncio.AbstractEventLoop, workdir: Path, type_id: str = KH_TYPE_ID):
        import kernel_hub_ipykernel.plugin

        from kernel_hub import KernelHub

        self.loop = loop
        self.type_id = type_id
        # Plain ZeroMQ like the other two variants (bench/curve_bench.py measures CurveZMQ).
        self.hub = KernelHub(
            plugins=[kernel_hub_ipykernel.plugin],
            load_entrypoints=False,
            config={},
            transport_encryption="disabled",
        )
        # Discovery is host set-up, done once; every launch below is timed.
        loop.run_until_complete(self.hub.find_kernel_types())

    # Plain defs handing back kernel_hub's own coroutines: no extra await layer is timed.
    def _start_one(self):
        # A failed launch's siblings stay in hub.kernels for abort().
        return self.hub.launch(self.type_id, ready_timeout=TIMEOUT)

    def _stop_one(self, k):
        return k.shutdown()

    def _execute(self, session, code: str, texts: list[str] | None):
        hook = None
        if texts is not None:

            def hook(msg):
                if msg.header["msg_type"] == "stream":
                    texts.append(msg.content["text"])

        return session[1].execute(code, output_hook=hook, timeout=TIMEOUT)

    def pid(self, k) -> int:
        return k.manager.pid

    def connect(self, k):
        client = k.client()
        self.loop.run_until_complete(client.connect())
        return k, client

    def disconnect(self, session) -> None:
        self.loop.run_until_complete(session[1].close())

    def pause(self, session) -> None:
        pass

    def resume(self, session) -> None:
        pass

    def abort(self) -> None:
        if not self.loop.is_closed():
            self.loop.run_until_complete(self.hub.shutdown_all(now=True))


class JupyterClientVariant(LoopVariant):
    """jupyter_client: ``AsyncKernelManager`` + ``AsyncKernelClient`` with a native kernelspec."""

    name = "jupyter_client"

    def __init__(self, loop: asyncio.AbstractEventLoop, workdir: Path) -> None:
        from jupyter_client import AsyncKernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        self.loop = loop
        self.manager_class = AsyncKernelManager
        # A private kernelspec with exactly KERNEL_ARGV, so no installed spec can differ.
        kernels = workdir / "kernels"
        spec_dir = kernels / JC_KERNEL_NAME
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": KERNEL_ARGV,
            "display_name": "kernel_hub bench",
            "language": "python",
            "interrupt_mode": "signal",
            "env": {},
            "metadata": {},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        self.ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
        self.live: set[tuple[Any, Any]] = set()

    async def _start_one(self):
        km = self.manager_class(kernel_name=JC_KERNEL_NAME, kernel_spec_manager=self.ksm)
        # The same stdio as the raw variant; jupyter_client would give the kernel a stdin pipe.
        await km.start_kernel(
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        kc = km.client()
        kc.start_channels()
        self.live.add((km, kc))  # for abort(), should a sibling start fail
        await kc.wait_for_ready(timeout=TIMEOUT)
        return km, kc

    async def _stop_one(self, h) -> None:
        km, kc = h
        kc.stop_channels()
        await km.shutdown_kernel()
        self.live.discard(h)

    async def _execute(self, session, code: str, texts: list[str] | None):
        kc = session[1]
        msg_id = kc.execute(code, allow_stdin=False)
        idle = False
        while not idle:
            msg = await kc.get_iopub_msg(timeout=TIMEOUT)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msg_type = msg["msg_type"]
            if msg_type == "status":
                idle = msg["content"]["execution_state"] == "idle"
            elif msg_type == "stream" and texts is not None:
                texts.append(msg["content"]["text"])
        while True:
            reply = await kc.get_shell_msg(timeout=TIMEOUT)
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def pid(self, h) -> int:
        return h[0].provisioner.pid

    def connect(self, h):
        return h  # the client that waited for readiness stays connected

    def disconnect(self, session) -> None:
        pass  # stop() stops the channels

    # The heartbeat thread pings every second; it is paused while the other variants run
    # so that its CPU is charged to jupyter_client's samples only.
    def pause(self, session) -> None:
        session[1].hb_channel.pause()

    def resume(self, session) -> None:
        session[1].hb_channel.unpause()

    def abort(self) -> None:
        async def go():
            for km, kc in list(self.live):
                with contextlib.suppress(Exception):
                    kc.stop_channels()
                with contextlib.suppress(Exception):
                    await km.shutdown_kernel(now=True)
            self.live.clear()

        if not self.loop.is_closed():
            self.loop.run_until_complete(go())


VARIANT_CLASSES: dict[str, Callable[..., Any]] = {
    "raw": RawVariant,
    "kernel_hub": KernelHubVariant,
    "jupyter_client": JupyterClientVariant,
}


# --------------------------------------------------------------------------------------------
# checks on the kernel side: the same argv and environment for every variant
# --------------------------------------------------------------------------------------------


def proc_environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        items = f.read().split(b"\0")
    return dict(i.decode(errors="replace").partition("=")[::2] for i in items if i)


def proc_argv(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    # The connection file path differs by design; compare the rest.
    return ["{connection_file}" if a.endswith(".json") else a for a in argv]


def compare_kernels(seen: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, Any]:
    """Return which argv/environment entries differ between the variants' kernels."""
    names = list(seen)
    ref_argv, ref_env = seen[names[0]]
    env_diff: dict[str, dict[str, str | None]] = {}
    argv_same = True
    for name in names[1:]:
        argv, env = seen[name]
        argv_same = argv_same and argv == ref_argv
        for key in set(env) | set(ref_env):
            if env.get(key) != ref_env.get(key):
                env_diff.setdefault(key, {})[names[0]] = ref_env.get(key)
                env_diff[key][name] = env.get(key)
    return {
        "argv": ref_argv,
        "argv_identical": argv_same,
        "env_identical": not env_diff,
        "env_differences": env_diff,
    }


# --------------------------------------------------------------------------------------------
# scenarios 1-4: interleaved in this process
# --------------------------------------------------------------------------------------------


def scenario_start_stop(variants, p, samples, checks) -> None:
    """Scenario 1: cold start → ready, then shutdown, N times per variant, interleaved."""
    log(f"[1] start → ready and shutdown, {p['start_n']} cold starts per variant")
    # One untimed start first: it creates IPYTHONDIR's profile and warms the page cache.
    v0 = variants[0]
    h, _, _ = retrying(v0, "warm-up", v0.start)
    v0.stop(h)
    out = {v.name: {"start_s": [], "start_cpu_s": [], "shutdown_s": []} for v in variants}
    seen = {}
    for r in range(p["start_n"]):
        for v in rotated(variants, r):
            h, dt, cpu = retrying(v, "start_stop", v.start)
            if v.name not in seen:
                seen[v.name] = (proc_argv(v.pid(h)), proc_environ(v.pid(h)))
            out[v.name]["start_s"].append(dt)
            out[v.name]["start_cpu_s"].append(cpu)
            out[v.name]["shutdown_s"].append(v.stop(h))
        log(f"    round {r + 1}/{p['start_n']}")
    samples["start_stop"] = out
    checks["kernel_side"] = compare_kernels(seen)


def kernel_cpu(pid: int) -> float:
    """Return the CPU seconds the kernel process *pid* has used, in all its threads.

    From each thread's ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds): ``/proc/<pid>/stat``
    counts in clock ticks (10 ms), too coarse for a block of round trips. A thread that
    ended meanwhile is no longer counted; an ipykernel's threads live as long as it does.
    """
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
    return total / 1e9


def scenario_execute_and_flood(variants, p, samples, checks) -> None:
    """Scenarios 2 and 3 on one long-lived kernel per variant."""
    sessions = {}
    try:
        for v in variants:
            h, _, _ = retrying(v, "execute", v.start)
            sessions[v.name] = (h, v.connect(h))
            v.pause(sessions[v.name][1])

        n, rounds = p["exec_block"], p["exec_rounds"]
        log(f"[2] execute('pass'): {p['exec_warmup']} warm-up, then {rounds} × {n} per variant")
        out = {v.name: {"latency_s": [], "blocks": []} for v in variants}
        pids = {v.name: v.pid(sessions[v.name][0]) for v in variants}
        for v in variants:
            s = sessions[v.name][1]
            v.resume(s)
            v.exec_block(s, p["exec_warmup"])
            v.pause(s)
        for r in range(rounds):
            for v in rotated(variants, r):
                s = sessions[v.name][1]
                gc.collect()
                v.resume(s)
                k0 = kernel_cpu(pids[v.name])
                lat, cpu, wall = v.exec_block(s, n)
                k1 = kernel_cpu(pids[v.name])
                v.pause(s)
                out[v.name]["latency_s"].extend(lat)
                block = {"n": n, "cpu_s": cpu, "wall_s": wall, "kernel_cpu_s": k1 - k0}
                out[v.name]["blocks"].append(block)
        samples["execute"] = out

        lines = p["flood_lines"]
        code = FLOOD_CODE.format(n=lines)
        expected = [str(i) for i in range(lines)]
        log(f"[3] IOPub flood of {lines} lines, {p['flood_rounds']} rounds per variant")
        fields = ("wall_s", "cpu_s", "kernel_cpu_s", "lines", "messages", "complete")
        out = {v.name: {f: [] for f in fields} for v in variants}
        for r in range(p["flood_rounds"]):
            for v in rotated(variants, r):
                s = sessions[v.name][1]
                gc.collect()
                v.resume(s)
                k0 = kernel_cpu(pids[v.name])
                wall, cpu, texts, nmsg = v.flood(s, code)
                k1 = kernel_cpu(pids[v.name])
                v.pause(s)
                got = "".join(texts).splitlines()
                out[v.name]["wall_s"].append(wall)
                out[v.name]["cpu_s"].append(cpu)
                out[v.name]["kernel_cpu_s"].append(k1 - k0)
                out[v.name]["lines"].append(len(got))
                out[v.name]["messages"].append(nmsg)
                out[v.name]["complete"].append(got == expected)
            log(f"    round {r + 1}/{p['flood_rounds']}")
        samples["iopub_flood"] = out
        checks["iopub_lines_complete"] = {name: all(d["complete"]) for name, d in out.items()}
    finally:
        for v in variants:
            if v.name in sessions:
                h, s = sessions[v.name]
                v.resume(s)
                v.disconnect(s)
                v.stop(h)


def scenario_concurrent(variants, p, samples, checks) -> None:
    """Scenario 4: N kernels started concurrently → all ready; then all shut down."""
    n = p["concurrent_kernels"]
    log(f"[4] {n} kernels at once, {p['concurrent_rounds']} rounds per variant")
    out = {v.name: {"start_all_s": [], "shutdown_all_s": []} for v in variants}
    for r in range(p["concurrent_rounds"]):
        for v in rotated(variants, r):
            gc.collect()
            hs, dt = retrying(v, "concurrent", lambda v=v: v.start_many(n))
            out[v.name]["start_all_s"].append(dt)
            out[v.name]["shutdown_all_s"].append(v.stop_many(hs))
        log(f"    round {r + 1}/{p['concurrent_rounds']}")
    samples["concurrent"] = {"kernels": n, **out}


# --------------------------------------------------------------------------------------------
# scenario 5: host footprint, one fresh child process per variant and repetition
# --------------------------------------------------------------------------------------------


def footprint_run(variant: str, n: int, workdir: str) -> dict[str, Any]:
    """Start *n* kernels of *variant*, each with a client, and snapshot; called by footprint.py."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    v = VARIANT_CLASSES[variant](loop, Path(workdir))
    handles: list[Any] = []
    try:
        handles, start_s = retrying(v, "footprint", lambda: v.start_many(n))
        # One connected client per kernel, as a host would hold them, each used once
        # (a client that never talked is not what a host keeps).
        sessions = [v.connect(h) for h in handles]
        for s in sessions:
            v.resume(s)
            v.exec_block(s, 1)
        time.sleep(0.5)  # let connections and helper threads settle
        gc.collect()
        loaded = snapshot() | helper_processes()
        for s in sessions:
            v.disconnect(s)
        stop_s = v.stop_many(handles)
        handles = []
    finally:
        if handles:
            v.abort()
        loop.close()
    return {
        "loaded": loaded,
        "start_all_s": start_s,
        "shutdown_all_s": stop_s,
        "launch_failures": FAILURES,
    }


def scenario_footprint(p, samples, checks, workdir: Path) -> None:
    n, reps = p["footprint_kernels"], p["footprint_reps"]
    log(f"[5] footprint with {n} kernels, {reps} fresh process(es) per variant")
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for r in range(reps):
        for name in rotated(VARIANTS, r):
            cmd = [sys.executable, str(BENCH_DIR / "footprint.py"), name, str(n), str(workdir)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"footprint child {name} failed:\n{proc.stderr[-3000:]}")
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            FAILURES.extend(child.pop("launch_failures"))
            out[name].append(child)
    samples["footprint"] = out


# --------------------------------------------------------------------------------------------
# remote kernels (Docker, SSH): to come
# --------------------------------------------------------------------------------------------
#
# A remote scenario measures the same four questions (start, execute, flood, many kernels)
# through a kernel_hub provider such as "docker/python3" or an SSH host, against peers that
# reach the same remote kernel: the raw client over a hand-made tunnel or published ports,
# and jupyter_client with its ssh tunnelling or a gateway. Register a callable here taking
# (loop, params, samples, checks); main() runs every registered one after the local
# scenarios, and its samples land under its own key in the JSON. Until a plugin exists
# for the transport, the registry stays empty.

RemoteScenario = Callable[[asyncio.AbstractEventLoop, dict, dict, dict], None]
REMOTE_SCENARIOS: dict[str, RemoteScenario] = {}


def run_remote_scenarios(loop, p, samples, checks) -> None:
    for name, scenario in REMOTE_SCENARIOS.items():
        log(f"[remote] {name}")
        scenario(loop, p, samples, checks)


# --------------------------------------------------------------------------------------------
# summary and table
# --------------------------------------------------------------------------------------------


def percentile(xs: Sequence[float], q: float) -> float:
    """Return the *q*-th percentile of *xs* with linear interpolation."""
    s = sorted(xs)
    if not s:
        return math.nan
    k = (len(s) - 1) * q / 100
    f = math.floor(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


# (key, label, unit, scale, how to get one number per variant, target kind, target)
# target kind "ratio": kernel_hub/raw must be ≤ target; "max": the value itself ≤ target;
# "eq": the value must equal the target.
def _metric_table(p: dict[str, Any]) -> list[tuple]:
    def med(scenario, field):
        return lambda s, v: statistics.median(s[scenario][v][field])

    # footprint.py's snapshots: the variant's own imports count, the harness's do not.
    def fp(field, with_imports):
        def get(s, v):
            return statistics.median(
                (r["loaded"][field] - r["harness"][field])
                + ((r["imported"][field] - r["base"][field]) if with_imports else 0)
                for r in s["footprint"][v]
            )

        return get

    def paired(scenario, field):
        # Rounds are interleaved, so round i of every variant saw about the same machine:
        # the median of per-round ratios is steadier than a ratio of medians.
        def get(s, v):
            raw, mine = s[scenario]["raw"][field], s[scenario][v][field]
            return statistics.median(b / a for a, b in zip(raw, mine, strict=True))

        return get

    nk, nf = p["concurrent_kernels"], p["footprint_kernels"]
    return [
        ("start_ready_ms", "start → ready (median)", "ms", 1e3, med("start_stop", "start_s"),
         "ratio", 1.10),
        ("start_cpu_ms", "start: host CPU (median)", "ms", 1e3,
         med("start_stop", "start_cpu_s"), None, None),
        ("shutdown_ms", "shutdown → process gone (median)", "ms", 1e3,
         med("start_stop", "shutdown_s"), "ratio", 1.2),
        ("shutdown_paired", "shutdown: per-round ratio to raw (median)", "", 1,
         paired("start_stop", "shutdown_s"), None, None),
        ("exec_latency_median_ms", "execute('pass') latency median", "ms", 1e3,
         med("execute", "latency_s"), None, None),
        ("exec_latency_p99_ms", "execute('pass') latency p99", "ms", 1e3,
         lambda s, v: percentile(s["execute"][v]["latency_s"], 99), None, None),
        ("exec_cpu_per_rt_us", "client CPU per round trip (median of blocks)", "µs", 1e6,
         lambda s, v: statistics.median(b["cpu_s"] / b["n"] for b in s["execute"][v]["blocks"]),
         "ratio", 1.2),
        ("exec_kernel_cpu_per_rt_us", "kernel CPU per round trip (median of blocks)", "µs", 1e6,
         lambda s, v: statistics.median(
             b["kernel_cpu_s"] / b["n"] for b in s["execute"][v]["blocks"]),
         None, None),
        ("flood_wall_ms", f"IOPub flood {p['flood_lines']} lines: wall (median)", "ms", 1e3,
         med("iopub_flood", "wall_s"), None, None),
        ("flood_cpu_ms", "IOPub flood: client CPU (median)", "ms", 1e3,
         med("iopub_flood", "cpu_s"), "ratio", 1.1),
        ("flood_kernel_cpu_ms", "IOPub flood: kernel CPU (median)", "ms", 1e3,
         med("iopub_flood", "kernel_cpu_s"), None, None),
        ("flood_lines_min", "IOPub flood: lines received (min)", "", 1,
         lambda s, v: min(s["iopub_flood"][v]["lines"]), "eq", p["flood_lines"]),
        ("flood_messages", "IOPub flood: stream messages (median)", "", 1,
         med("iopub_flood", "messages"), None, None),
        ("concurrent_start_ms", f"{nk} kernels at once → all ready (median)", "ms", 1e3,
         med("concurrent", "start_all_s"), "ratio", 1.05),
        ("concurrent_start_paired", f"{nk} kernels at once: per-round ratio to raw (median)",
         "", 1, paired("concurrent", "start_all_s"), None, None),
        ("concurrent_shutdown_ms", f"{nk} kernels → all shut down (median)", "ms", 1e3,
         med("concurrent", "shutdown_all_s"), None, None),
        ("rss_delta_mb", f"RSS Δ, {nf} kernels, incl. imports", "MB", 1 / 1024,
         fp("rss_kb", True), "ratio", 1.5),
        ("rss_delta_kernels_mb", f"RSS Δ, {nf} kernels, after imports", "MB", 1 / 1024,
         fp("rss_kb", False), "ratio", 1.5),
        ("helper_processes", f"helper processes with {nf} kernels", "", 1,
         lambda s, v: max(r["loaded"]["helpers"] for r in s["footprint"][v]), None, None),
        ("helper_rss_mb", "helper processes' RSS", "MB", 1 / 1024,
         lambda s, v: statistics.median(r["loaded"]["helpers_rss_kb"] for r in s["footprint"][v]),
         None, None),
        ("os_threads", f"OS threads with {nf} kernels", "", 1,
         lambda s, v: max(r["loaded"]["os_threads"] for r in s["footprint"][v]), "max", 3),
        ("py_threads", f"Python threads with {nf} kernels", "", 1,
         lambda s, v: max(r["loaded"]["py_threads"] for r in s["footprint"][v]), None, None),
        ("fds_delta", f"open fds Δ with {nf} kernels", "", 1, fp("fds", True),
         None, None),
    ]  # fmt: skip


def summarize(samples: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    summary = {}
    for key, label, unit, scale, get, kind, target in _metric_table(p):
        row: dict[str, Any] = {"label": label, "unit": unit, "target_kind": kind, "target": target}
        try:
            for v in VARIANTS:
                row[v] = get(samples, v) * scale
        except KeyError:
            continue  # its scenario was not run (--only)
        for v in ("kernel_hub", "jupyter_client"):
            row[f"{v}/raw"] = row[v] / row["raw"] if row["raw"] else None
        if kind == "ratio":
            row["kernel_hub_ok"] = row["kernel_hub/raw"] <= target
        elif kind == "max":
            row["kernel_hub_ok"] = row["kernel_hub"] <= target
        elif kind == "eq":
            row["kernel_hub_ok"] = row["kernel_hub"] == target
        else:
            row["kernel_hub_ok"] = None
        summary[key] = row
    return summary


def _fmt(x: float) -> str:
    if isinstance(x, float) and math.isnan(x):
        return "-"
    if abs(x) >= 100 or x == int(x):
        return f"{x:.0f}"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:.1f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def render_table(summary: dict[str, Any]) -> str:
    head = ["metric", "unit", *VARIANTS, "kh/raw", "jc/raw", "target", "kh"]
    rows = [head]
    for row in summary.values():
        kind, target = row["target_kind"], row["target"]
        tgt = ""
        if kind == "ratio":
            tgt = f"≤{target:.2f}×"
        elif kind == "max":
            tgt = f"≤{target}"
        elif kind == "eq":
            tgt = f"={target}"
        ok = {True: "ok", False: "MISS", None: ""}[row["kernel_hub_ok"]]
        rows.append([
            row["label"], row["unit"], *(_fmt(row[v]) for v in VARIANTS),
            _ratio(row["kernel_hub/raw"]), _ratio(row["jupyter_client/raw"]), tgt, ok,
        ])  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        pairs = enumerate(zip(r, widths, strict=True))
        cells = [c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in pairs]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# hygiene: nothing of ours may survive the run
# --------------------------------------------------------------------------------------------


def describe_process(pid: int) -> dict[str, Any]:
    """Return what identifies a leftover process: its command, parent and launching host."""
    info: dict[str, Any] = {"pid": pid}
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        info["state"], info["ppid"] = fields[0], int(fields[1])
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            info["age_s"] = round(float(f.read().split()[0]) - int(fields[19]) / ticks, 1)
        info["cmdline"] = " ".join(proc_argv(pid))[:300]
        info["JPY_PARENT_PID"] = proc_environ(pid).get("JPY_PARENT_PID")
    return info


def close_library_helpers() -> None:
    """Stop helper processes a variant's library keeps for the host's lifetime.

    kernel_hub's reaper would end at interpreter exit; it is closed here, through
    its own API, so that the leak check below sees whether it really ends.
    """
    module = sys.modules.get("kernel_hub.managers.reaper")
    if module is not None and hasattr(module, "reaper"):
        module.reaper().close()


def leftovers(runtime_dir: Path) -> dict[str, list]:
    close_library_helpers()
    # A process that is exiting right now is given a moment before it counts as left behind.
    deadline = time.monotonic() + 2.0
    # Imported here, not at the top: the footprint child imports this module as its harness.
    from kernel_hub.testing import processes_with_env

    marker = f"JUPYTER_RUNTIME_DIR={runtime_dir}"  # our private runtime dir
    procs = processes_with_env(marker)
    while procs and time.monotonic() < deadline:
        time.sleep(0.1)
        procs = processes_with_env(marker)
    described = [describe_process(pid) for pid in procs]
    for pid in procs:  # report them, and do not leave them running either
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    files = sorted(p.name for p in runtime_dir.iterdir()) if runtime_dir.exists() else []
    return {"processes": described, "files": files}


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def cpu_counters() -> tuple[float, float]:
    """Return (CPU seconds used by the whole machine, by this process and its reaped children)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
    busy = sum(fields[:3]) + sum(fields[5:8])
    t = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system + t.children_user + t.children_system


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("kernel-hub", "ipykernel", "jupyter_client", "pyzmq", "ipython"):
        try:
            out[dist] = version(dist)
        except Exception:
            out[dist] = "?"
    out["libzmq"] = zmq.zmq_version()
    return out


def source_digest() -> str:
    """Return a short sha256 of kernel_hub's sources, tying results to the code they measured."""
    import hashlib

    root = BENCH_DIR.parent
    h = hashlib.sha256()
    for path in sorted([*root.glob("kernel_hub/**/*.py"), *root.glob("plugins/ipykernel/**/*.py")]):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    ap.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    p = dict(QUICK if args.quick else FULL)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; choose from {SCENARIOS}")

    workdir = Path(tempfile.mkdtemp(prefix="kh-bench-"))
    runtime_dir = workdir / "runtime"
    runtime_dir.mkdir(mode=0o700)
    # Part of every kernel's environment, identical for all variants; it also marks our
    # processes for the leak check, and keeps the user's IPython history untouched.
    os.environ["JUPYTER_RUNTIME_DIR"] = str(runtime_dir)
    os.environ["IPYTHONDIR"] = str(workdir / "ipython")

    samples: dict[str, Any] = {}
    checks: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    variants = [VARIANT_CLASSES[name](loop, workdir) for name in VARIANTS]
    t0 = time.perf_counter()
    machine0, ours0 = cpu_counters()
    try:
        if "start_stop" in only:
            scenario_start_stop(variants, p, samples, checks)
        if "execute" in only or "iopub_flood" in only:
            scenario_execute_and_flood(variants, p, samples, checks)
        if "concurrent" in only:
            scenario_concurrent(variants, p, samples, checks)
        if "footprint" in only:
            scenario_footprint(p, samples, checks, workdir)
        run_remote_scenarios(loop, p, samples, checks)
    finally:
        for v in variants:
            with contextlib.suppress(Exception):
                v.abort()
        loop.close()
        asyncio.set_event_loop(None)
        checks["launch_failures"] = FAILURES
        checks["leftovers"] = leftovers(runtime_dir)
        shutil.rmtree(workdir, ignore_errors=True)

    elapsed = time.perf_counter() - t0
    machine1, ours1 = cpu_counters()
    # CPU that other processes used meanwhile: a busy machine makes the numbers unreliable.
    foreign_cpu = max(0.0, (machine1 - machine0) - (ours1 - ours0))
    summary = summarize(samples, p)
    result = {
        "meta": {
            "date": date.today().isoformat(),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": sys.version.split()[0],
            },
            "versions": versions(),
            "kernel_hub_sources_sha256": source_digest(),
            "quick": args.quick,
            "params": p,
            "kernel_argv": KERNEL_ARGV,
            "elapsed_s": elapsed,
            "foreign_cpu_s": foreign_cpu,
        },
        "samples": samples,
        "summary": summary,
        "checks": checks,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))

    if summary:
        print(render_table(summary))
    side = checks.get("kernel_side", {})
    print(
        f"\nkernel argv identical: {side.get('argv_identical')}, "
        f"environment identical: {side.get('env_identical')}"
        + (f" (differences: {side['env_differences']})" if side.get("env_differences") else "")
    )
    print(f"IOPub lines complete: {checks.get('iopub_lines_complete')}")
    for f in FAILURES:
        print(f"launch failure ({f['variant']}, {f['scenario']}): {f['error'].splitlines()[-2:]}")
    left = checks["leftovers"]
    print(f"left behind: {len(left['processes'])} processes, {len(left['files'])} files")
    for proc in left["processes"]:
        print(f"  left behind (killed now): {proc}")
    share = foreign_cpu / (elapsed * (os.cpu_count() or 1))
    print(f"other processes used {foreign_cpu:.1f} CPU s ({share:.0%} of the machine) meanwhile")
    if share > 0.05:
        print("WARNING: the machine was busy; rerun on a quiet machine before trusting the numbers")
    print(f"kernel_hub sources sha256: {result['meta']['kernel_hub_sources_sha256']}")
    print(f"{elapsed:.0f} s; samples and summary in {args.json}")
    return 1 if left["processes"] or left["files"] else 0


if __name__ == "__main__":
    sys.exit(main())
