"""Scenario 5's child process: one variant's host footprint, measured from a lean start.

``bench.py`` runs ``python bench/footprint.py VARIANT N WORKDIR`` once per
variant and repetition, and reads one JSON line from its stdout. The child
takes four snapshots (RSS, OS threads, Python threads, open fds):

``base``
    with nothing imported but what this file needs (stdlib ``gc``, ``os``,
    ``sys``, ``threading``, ``importlib``, all loaded at interpreter start-up);
``imported``
    after importing the variant's own libraries (:data:`LIBRARIES`);
``harness``
    after importing ``bench`` itself, whose extra modules (argparse,
    statistics, importlib.metadata, …) are nobody's cost and are left out;
``loaded``
    with N kernels running, each with one connected client.

So the footprint of a variant is ``(imported - base) + (loaded - harness)``
including its imports, and ``loaded - harness`` for the kernels alone.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import threading

#: What each variant imports to do its job; the import cost is part of its footprint.
LIBRARIES = {
    "raw": ("raw_client",),
    "kernel_hub": ("asyncio", "kernel_hub", "kernel_hub_ipykernel.plugin"),
    "jupyter_client": ("asyncio", "jupyter_client"),
}


def snapshot() -> dict[str, int]:
    """Return this process's RSS (kB), OS threads, Python threads and open fds."""
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.split()
    return {
        "rss_kb": int(status["VmRSS"][0]),
        "os_threads": int(status["Threads"][0]),
        "py_threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
    }


def helper_processes() -> dict[str, int]:
    """Return the count and total RSS (kB) of this process's children that are not kernels.

    A host library may run helpers of its own (kernel_hub's reaper, for instance):
    they are part of the host's footprint although they are not in its RSS. kernel_hub's
    reaper is not a child (init adopts it): it is found by its command line, which ends
    with the pid of the host it watches.
    """
    me, count, rss = str(os.getpid()), 0, 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            args = cmdline.split(b"\0")
            reaper = args[1:4] == [b"-I", b"-S", b"-c"] and args[-2:] == [me.encode(), b""]
            if (ppid != me and not reaper) or b"ipykernel_launcher" in cmdline:
                continue
            with open(f"/proc/{entry}/status") as f:
                rss += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            count += 1
        except (OSError, StopIteration):
            continue
    return {"helpers": count, "helpers_rss_kb": rss}


def measure() -> dict[str, object]:
    """Measure the variant named on the command line; return the JSON-able result."""
    variant, n, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    gc.collect()
    base = snapshot()
    for module in LIBRARIES[variant]:
        importlib.import_module(module)
    gc.collect()
    imported = snapshot()

    import bench  # the harness: measured separately and left out

    gc.collect()
    harness = snapshot()
    result = bench.footprint_run(variant, n, workdir)
    return {"variant": variant, "kernels": n, "base": base, "imported": imported,
            "harness": harness, **result}  # fmt: skip


if __name__ == "__main__":
    import json

    print(json.dumps(measure()))
