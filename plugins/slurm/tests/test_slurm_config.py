"""Slurm kernel types from config tables, the hooks' decisions, the pure helpers (no cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import kernel_hub_slurm.plugin as plugin
import pytest
from kernel_hub_slurm.cluster import CommandResult
from kernel_hub_slurm.config import parse_config
from kernel_hub_slurm.launch import job_script
from kernel_hub_slurm.manager import describe_end

from kernel_hub import KernelHub
from kernel_hub.provider import ConfigError, KernelType, RestartPolicy
from kernel_hub.testing import run_cli

GPU = {
    "partition": "gpu",
    "time": "02:00:00",
    "cpus": 4,
    "mem": "16G",
    "gres": "gpu:1",
    "account": "proj42",
    "qos": "short",
    "sbatch_args": ["--constraint=a100"],
    "python": "/opt/conda/bin/python",
    "setup": ["module load cuda/12"],
    "env": {"OMP_NUM_THREADS": "4"},
}


def test_tables_become_kernel_types():
    configs = parse_config({"GPU-Short": GPU, "tiny": {}})
    assert sorted(configs) == ["gpu-short", "tiny"]
    kt = configs["gpu-short"].kernel_type()
    assert kt.id == "slurm/gpu-short"
    assert (
        kt.display_name
        == "gpu-short (Slurm partition=gpu, time=02:00:00, cpus=4, mem=16G, gres=gpu:1)"
    )
    assert kt.argv == (
        "/opt/conda/bin/python",
        "-m",
        "ipykernel_launcher",
        "-f",
        "{connection_file}",
    )
    assert kt.metadata["account"] == "proj42" and kt.metadata["restart"] is False
    assert json.loads(json.dumps(kt.to_dict())) == kt.to_dict()
    tiny = configs["tiny"]
    assert (tiny.cpus, tiny.python, tiny.restart, tiny.register_ip) == (
        1,
        "python3",
        False,
        "127.0.0.1",
    )


def test_sbatch_options_come_from_the_table():
    kc = parse_config({"g": GPU})["g"]
    assert kc.sbatch_options() == [
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=4",
        "--partition=gpu",
        "--time=02:00:00",
        "--mem=16G",
        "--gres=gpu:1",
        "--account=proj42",
        "--qos=short",
        "--constraint=a100",
    ]


def test_params_override_table_values():
    kc = parse_config({"g": GPU})["g"]
    short = kc.with_params({"time": "00:30:00", "cpus": 2})
    assert (short.time, short.cpus, short.partition, short.setup) == (
        "00:30:00",
        2,
        "gpu",
        ("module load cuda/12",),
    )
    assert kc.time == "02:00:00"  # the table itself is unchanged
    with pytest.raises(ConfigError, match=r"launch params 'python' are not known to slurm/g"):
        kc.with_params({"python": "/usr/bin/python3"})
    with pytest.raises(
        ConfigError, match=r"launch params of slurm/g field 'cpus' must be at least 1"
    ):
        kc.with_params({"cpus": 0})


def test_the_registration_handshake_is_declared_as_in_a_kernelspec():
    kc = parse_config({"x": {"kernel_protocol_version": "5.6"}})["x"]
    assert kc.kernel_type().metadata["kernel_protocol_version"] == "5.6"
    assert "kernel_protocol_version" not in parse_config({"y": {}})["y"].kernel_type().metadata
    # Its launch params are read by the launch, not job fields: the table stays as it is.
    assert kc.with_params({"registration": False, "registration_timeout": 5}) is kc
    short = kc.with_params({"registration": True, "time": "00:30:00"})
    assert short.time == "00:30:00" and short.kernel_protocol_version == "5.6"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"cpus": "4"}, "[slurm.k] field 'cpus' must be an integer, not str '4'"),
        ({"cpus": True}, "[slurm.k] field 'cpus' must be an integer, not bool True"),
        ({"time": "2h"}, "[slurm.k] field 'time' '2h' is not a Slurm time limit; use MM, HH:MM:SS"),
        ({"mem": "lots"}, "[slurm.k] field 'mem' 'lots' is not a Slurm memory size"),
        ({"partition": "a b"}, "[slurm.k] field 'partition' is not a valid Slurm name: 'a b'"),
        ({"sbatch_args": ["--output=x"]}, "may not set --output: the plugin sets it itself"),
        ({"register_ip": "login"}, "'login' is not an IP address; give this host's address"),
        ({"register_ip": "0.0.0.0"}, "'0.0.0.0' listens everywhere; give the one address"),
        ({"login_ip": "login"}, "'login' is not an IP address; give the login node's address"),
        ({"login_ip": "::"}, "'::' listens everywhere; give the one address of the login node"),
        ({"argv": ["python"]}, "field 'argv' must contain '{connection_file}'"),
        (
            {"kernel_protocol_version": "5.x"},
            "field 'kernel_protocol_version' '5.x' is not a protocol version; write it as in",
        ),
        ({"env": {"A": 1}}, "field 'env' values must be strings (see 'A')"),
        ({"walltime": "1"}, "has unknown field(s) 'walltime'; known fields: account, argv"),
        ({"poll_interval": 0}, "field 'poll_interval' must be positive, not 0"),
        ({"login": "my login"}, "field 'login' 'my login' is not a login node; name an [ssh."),
        ({"lease": 0}, "field 'lease' must be positive, not 0"),
    ],
)
def test_bad_fields_are_one_clear_line(table, message):
    with pytest.raises(ConfigError) as info:
        parse_config({"k": table})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_job_script_holds_no_secret_and_runs_the_setup_first():
    kc = parse_config({"g": GPU})["g"]
    script = job_script(kc, "/shared/jobs/kernel-1", kernel_id="abc")
    assert script.splitlines() == [
        "#!/bin/sh",
        "# kernel_hub: slurm/g, kernel abc",
        "module load cuda/12",
        "exec /opt/conda/bin/python /shared/jobs/kernel-1/nanny.py "
        "--register /shared/jobs/kernel-1/register.json",
    ]


def test_hook_restart_policy_does_not_resubmit_unless_the_table_says_so():
    hub = KernelHub(config={"slurm": {"once": {}, "again": {"restart": True}}})
    once = KernelType(provider="slurm", name="once")
    again = KernelType(provider="slurm", name="again")
    assert plugin.restart_policy(hub=hub, kernel_type=once) == RestartPolicy(enabled=False)
    assert plugin.restart_policy(hub=hub, kernel_type=again) == RestartPolicy()


def test_kernel_hub_list_shows_tables_without_slurm(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[slurm.gpu-short]\npartition = "gpu"\ntime = "01:00:00"\n')
    env = {
        **os.environ,
        "KERNEL_HUB_CONFIG": str(config),
        "PATH": str(tmp_path),  # no sbatch, squeue or anything else of Slurm's
        "KERNEL_HUB_DISABLE_PLUGINS": "docker,ssh",
    }
    out = subprocess.run(
        [sys.executable, "-m", "kernel_hub", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    types = {t["id"]: t for t in json.loads(out)}
    assert types["slurm/gpu-short"]["metadata"]["partition"] == "gpu"
    assert types["slurm/gpu-short"]["metadata"]["time"] == "01:00:00"


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [
        (
            "TIMEOUT",
            "TimeLimit",
            "Slurm job 7 reached its time limit (1:00:00); raise 'time' in [slurm.k]",
        ),
        ("PREEMPTED", "None", "Slurm job 7 was preempted by a higher-priority job"),
        ("NODE_FAIL", "None", "Slurm job 7 ended because its node failed"),
        ("OUT_OF_MEMORY", "None", "Slurm job 7 ran out of memory; raise 'mem' in [slurm.k]"),
        ("CANCELLED", "None", "Slurm job 7 was cancelled (scancel)"),
        ("FAILED", "NonZeroExitCode", "Slurm job 7 ended (FAILED, NonZeroExitCode)"),
        ("", "", "Slurm job 7 left the queue"),
    ],
)
def test_describe_end_names_the_cause(state, reason, expected):
    assert describe_end("7", state, reason, name="k", time_limit="1:00:00").startswith(expected)


def test_sbatch_error_line_quotes_slurm():
    result = CommandResult(
        1,
        "",
        "sbatch: error: invalid partition specified: x\n"
        "sbatch: error: Batch job submission failed: Invalid partition name specified\n",
    )
    assert result.error_line() == (
        "invalid partition specified: x; Batch job submission failed: "
        "Invalid partition name specified"
    )


@pytest.mark.parametrize(
    ("table", "dial"),
    [
        ({"register_ip": "10.0.0.5"}, "10.0.0.5"),  # no login: this host
        ({"login": "hpc", "login_ip": "10.1.0.2", "register_ip": "10.0.0.5"}, "10.1.0.2"),
        ({"login": "hpc", "register_ip": "10.1.0.2"}, "10.1.0.2"),  # written before login_ip
        ({"login": "hpc"}, "127.0.0.1"),
        (
            {"login": "hpc", "route": "direct", "login_ip": "10.1.0.2", "register_ip": "10.0.0.5"},
            "10.0.0.5",
        ),
    ],
)
def test_the_nanny_dials_login_ip_through_the_login_node_else_register_ip(table, dial):
    assert parse_config({"k": table})["k"].dial_ip == dial


def test_readme_config_example_is_valid():
    import ast
    import re
    import tomllib
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text()
    toml_blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert toml_blocks
    for block in toml_blocks:
        configs = parse_config(tomllib.loads(block)["slurm"])
        if "gpu-short" in configs:
            assert configs["gpu-short"].kernel_type().id == "slurm/gpu-short"
            assert configs["gpu-short"].with_params({"time": "00:30:00", "cpus": 2}).cpus == 2
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        compile(block, "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


class _Squeue:
    """A runner whose ``squeue`` prints one line, as Slurm 22.05 does for a pending job."""

    label = "this machine"

    def __init__(self, line: str) -> None:
        self.line = line

    async def run(self, argv, *, input=None, timeout=30.0):
        assert argv[0] == "squeue"
        return CommandResult(0, self.line + "\n", "")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("None", "Slurm job 12 is pending, position 1 in the queue"),
        ("Resources", "Slurm job 12 is pending (Resources), position 1 in the queue"),
    ],
)
def test_pending_progress_line_gives_a_reason_only_when_there_is_one(reason, expected):
    """Issue #22 item 11: squeue's reason "None" became "pending (None)"."""
    import asyncio

    from kernel_hub_slurm.cluster import SlurmCLI
    from kernel_hub_slurm.launch import pending_message

    status = asyncio.run(SlurmCLI(_Squeue(f"12|PENDING|{reason}|")).status("12"))
    assert status is not None and status.state == "PENDING"
    assert pending_message("12", status.reason, 1) == expected


def test_the_testing_module_imports_without_pytest():
    """Issue #22 item 11: the README offers kernel_hub_slurm_testing to anyone, pytest or not."""
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import kernel_hub_slurm_testing as t\n"
        "assert callable(t.start_cluster) and t.SlurmCluster\n"
        # The old path names the same module (issue #22 item 12), also without pytest.
        "import kernel_hub_slurm.testing as old\n"
        "assert old is t\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


# ---- one bad table costs only its own type (issue #22 item 1) ----

BROKEN = """
[slurm]
partition = "gpu"

[slurm.good]
partition = "gpu"

[slurm.typo]
partiton = "gpu"

[slurm.late]
time = "2h"
"""


def kernel_hub(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``kernel-hub`` on BROKEN, with no Slurm command on PATH."""
    config = tmp_path / "config.toml"
    config.write_text(BROKEN)
    env = {
        "KERNEL_HUB_CONFIG": str(config),
        "PATH": str(tmp_path),
        "KERNEL_HUB_DISABLE_PLUGINS": "docker,ssh",
    }
    return run_cli(*args, env=env)


def test_a_bad_table_drops_only_its_type_with_one_line_naming_file_table_and_field(tmp_path):
    res = kernel_hub(tmp_path, "list", "--json")
    assert res.returncode == 0, res.stderr
    ids = {t["id"] for t in json.loads(res.stdout)}
    assert "slurm/good" in ids and not ids & {"slurm/typo", "slurm/late"}
    warnings = [line for line in res.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 3, res.stderr
    (typo,) = [w for w in warnings if "[slurm.typo]" in w]
    assert str(tmp_path / "config.toml") in typo
    assert "unknown field(s) 'partiton'" in typo and "did you mean 'partition'?" in typo
    assert "The slurm/typo kernel type is left out until this is fixed" in typo
    (late,) = [w for w in warnings if "[slurm.late]" in w]
    assert "field 'time' '2h' is not a Slurm time limit; use MM, HH:MM:SS" in late
    (stray,) = [w for w in warnings if "[slurm.partition]" in w]
    assert "must be a table (one per slurm kernel type), not str 'gpu'" in stray
    assert "ConfigError(" not in res.stderr and "Traceback" not in res.stderr


def test_config_check_reports_each_bad_slurm_table(tmp_path):
    res = kernel_hub(tmp_path, "config", "check")
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout
    assert "[slurm.good]  ok" in out and '"gpu"  (config)' in out
    assert "[slurm.typo]  ERROR:" in out and "did you mean 'partition'?" in out
    assert "[slurm.late]  ERROR:" in out and "'2h' is not a Slurm time limit" in out
    assert "[slurm.partition]  ERROR:" in out
    assert "not checked" not in out
    assert "3 table(s) with errors" in res.stderr


def test_hooks_of_good_types_work_next_to_a_bad_table():
    hub = KernelHub(config={"slurm": {"good": {"restart": True}, "late": {"time": "2h"}}})
    good = KernelType(provider="slurm", name="good")
    assert plugin.restart_policy(hub=hub, kernel_type=good) == RestartPolicy()
    with pytest.raises(ConfigError, match=r"^kernel_hub config \[slurm.late\] field 'time'"):
        plugin.launch(hub=hub, kernel_type=KernelType(provider="slurm", name="late"), request=None)
