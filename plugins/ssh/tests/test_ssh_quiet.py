"""asyncssh's import warnings and INFO chatter never reach a user (issue 20, item 2).

Each check runs in a fresh interpreter: what is asserted is what a process that
imports the plugin sees, from its first import of asyncssh on. With cryptography
51 or newer (uv.lock pins one), asyncssh 2.24 warns five times at import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_dsa_deprecation_of_cryptography_is_really_there():
    # The premise: without the plugin's narrow filter, importing asyncssh warns. If a
    # cryptography release drops the warning, this fails and the filter can go.
    res = run("import asyncssh", "-W", "error::Warning")
    assert res.returncode != 0
    assert "DSA is deprecated" in res.stderr


def test_importing_the_plugin_warns_nothing():
    res = run(
        """
        import kernel_hub_ssh.connection, kernel_hub_ssh.remote_launch
        import asyncssh
        print("ok")
        """,
        "-W",
        "error::Warning",
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == "ok\n" and res.stderr == ""


def test_the_filter_is_narrow_and_does_not_outlive_the_import():
    res = run(
        """
        import warnings
        from cryptography.utils import CryptographyDeprecationWarning
        import kernel_hub_ssh.connection
        # The same message from the user's own code still reaches them.
        warnings.warn("DSA is deprecated (the user's own)", CryptographyDeprecationWarning)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "DSA is deprecated (the user's own)" in res.stderr


LEVELS = """
    import logging
    {before}
    from kernel_hub_ssh import _asyncssh
    {after}
    print(logging.getLevelName(logging.getLogger("asyncssh").getEffectiveLevel()))
"""


def level_after(before: str = "", after: str = "") -> str:
    code = textwrap.dedent(LEVELS).format(before=before, after=after)
    res = run(code)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_asyncssh_info_is_held_back_under_a_host_that_logs_at_info():
    # papermill's shape: the root logger at INFO.
    assert level_after("logging.basicConfig(level=logging.INFO)") == "WARNING"


def test_kernel_hub_debug_logging_lets_asyncssh_speak():
    debug = "logging.basicConfig(level=logging.INFO); logging.getLogger('kernel_hub').setLevel(10)"
    assert level_after(debug) == "INFO"
    # Turned on after the import (kernel-hub -vv parses its arguments later): the next
    # connection asks again.
    later = "logging.getLogger('kernel_hub').setLevel(10); _asyncssh.quiet_logging()"
    assert level_after("logging.basicConfig(level=logging.INFO)", later) == "INFO"


def test_a_level_the_user_set_on_asyncssh_is_kept():
    assert level_after("logging.getLogger('asyncssh').setLevel(logging.INFO)") == "INFO"
    assert level_after("logging.getLogger('asyncssh').setLevel(logging.ERROR)") == "ERROR"
