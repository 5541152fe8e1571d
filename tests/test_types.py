from __future__ import annotations

import json

import pytest

from kernel_hub import KernelType, RestartPolicy
from kernel_hub.contract.types import LaunchRequest, split_type_id


def test_kernel_type_id_is_namespaced_and_name_normalised():
    kt = KernelType(provider="Spec", name=" Python3 ", argv=["python"])
    assert kt.id == "spec/python3"
    assert kt.display_name == "python3"
    assert kt.argv == ("python",)
    assert hash(kt) == hash(KernelType(provider="spec", name="python3", argv=("python",)))
    json.dumps(kt.to_dict())


@pytest.mark.parametrize("name", ["", "a/b", "-x", "has space", "ü"])
def test_kernel_type_rejects_bad_names(name):
    with pytest.raises(ValueError, match="invalid kernel name"):
        KernelType(provider="spec", name=name)


def test_kernel_type_rejects_bad_interrupt_mode():
    with pytest.raises(ValueError, match="interrupt_mode"):
        KernelType(provider="spec", name="x", interrupt_mode="poke")  # type: ignore[arg-type]


def test_split_type_id():
    assert split_type_id("SSH/gpu-box") == ("ssh", "gpu-box")
    with pytest.raises(ValueError, match="<provider>/<name>"):
        split_type_id("python3")


def test_restart_policy_backoff_grows_and_caps():
    p = RestartPolicy(backoff_initial=0.5, backoff_max=3.0, jitter=0.5)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.delay(2, random=0.99) == pytest.approx(1.0 * 1.495)
    with pytest.raises(ValueError):
        RestartPolicy(backoff_initial=2, backoff_max=1)


def test_a_launch_request_keeps_copies_of_env_and_params():
    env, params = {"A": "1"}, {"n": 1}
    request = LaunchRequest(kernel_id="k", env=env, params=params)
    env["A"], params["n"] = "2", 2  # the caller reuses its dicts
    assert request.env == {"A": "1"} and request.params == {"n": 1}
