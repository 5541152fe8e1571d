"""A real browser: JupyterLab on 127.0.0.1, driven headless in Debian's chromium by playwright.

Opens a notebook whose kernelspec is a bridged type, runs a cell, and sees its
output. The screenshot is kept as a test artifact (``$KERNEL_HUB_TEST_ARTIFACTS``,
default ``test-artifacts/`` at the repository root); the README shows one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from kernel_hub_jupyter_testing import JupyterServer, kernel_pids

from kernel_hub.testing import require_service, wait_pid_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM = "/usr/bin/chromium"
#: How long to wait for the page, the kernel and the output: a slow shared machine.
WAIT_MS = 180_000
#: No GPU, no sandbox (root in a container), and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def artifacts_dir() -> Path:
    root = Path(__file__).resolve().parents[3]
    path = Path(os.environ.get("KERNEL_HUB_TEST_ARTIFACTS") or root / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_jupyterlab_runs_a_cell_on_a_bridged_kernel(bridged, tmp_path):
    require_service(
        "chromium", os.path.exists(CHROMIUM), "apt-get install -y chromium (.ci/run does this)"
    )
    from playwright.sync_api import expect, sync_playwright

    jupyter_path = str(bridged.prefix / "share" / "jupyter")
    spec = Path(jupyter_path, "kernels", bridged.python, "kernel.json")
    display_name = json.loads(spec.read_text())["display_name"]
    with JupyterServer.start(tmp_path, app="jupyterlab", jupyter_path=jupyter_path) as lab:
        notebook = {
            "type": "notebook",
            "content": {
                "cells": [
                    {
                        "cell_type": "code",
                        "source": "",
                        "metadata": {},
                        "outputs": [],
                        "execution_count": None,
                    }
                ],
                "metadata": {
                    "kernelspec": {
                        "name": bridged.python,
                        "display_name": "Python (kernel_hub)",
                        "language": "python",
                    }
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            },
        }
        lab.api("PUT", "/api/contents/bridge.ipynb", notebook)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 700})
                page.set_default_timeout(WAIT_MS)
                page.goto(f"{lab.url}/lab/tree/bridge.ipynb?token={lab.token}")
                # The toolbar names the bridged spec once the session has its kernel; before
                # that, running a cell would open the "Select Kernel" dialog.
                kernel_name = page.locator(".jp-NotebookPanel-toolbar .jp-KernelName")
                expect(kernel_name).to_have_text(display_name, timeout=WAIT_MS)
                status = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
                expect(status).to_be_visible(timeout=WAIT_MS)
                news = page.get_by_role("button", name="No", exact=True)
                if news.is_visible():
                    news.click()  # "notified about official Jupyter news?": not in the picture
                editor = page.locator(".jp-Cell .cm-content").first
                editor.click()
                page.keyboard.type("import os\nprint('kernel_hub says', 6*7, os.getpid())")
                page.keyboard.press("Shift+Enter")
                output = page.locator(".jp-OutputArea-output").first
                expect(output).to_contain_text("kernel_hub says 42", timeout=WAIT_MS)
                page.screenshot(path=str(artifacts_dir() / "jupyterlab-bridge.png"))
                pid = int(output.inner_text().split()[-1])
            except BaseException:
                page.screenshot(path=str(artifacts_dir() / "jupyterlab-bridge-failed.png"))
                print("".join(lab.log[-60:]))
                raise
            finally:
                browser.close()
        (kid,) = [k["id"] for k in lab.api("GET", "/api/kernels")]
        assert kernel_pids(kid) == [pid]  # the kernel kernel_hub started for Jupyter's id
        lab.api("DELETE", f"/api/kernels/{kid}")
        assert wait_pid_gone(pid, 60)
        assert lab.kernel_files() == []
