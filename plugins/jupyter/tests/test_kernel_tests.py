"""jupyter_kernel_test's protocol conformance battery, run on a bridged kernel type.

``KernelTests`` starts its kernel with jupyter_client's ``start_new_kernel``
by kernelspec name, so it goes through the ``kernel-hub`` provisioner and
kernel_hub's ``ipykernel/python3`` type.
"""

from __future__ import annotations

import jupyter_kernel_test
import pytest
from kernel_hub_jupyter.provisioner import KernelHubProvisioner

pytestmark = [pytest.mark.integration]


@pytest.mark.usefixtures("bridged")  # session-scoped: the specs exist before setUpClass
class TestBridgedPython(jupyter_kernel_test.KernelTests):
    kernel_name = "kh-ipykernel-python3"
    language_name = "python"
    file_extension = ".py"
    code_hello_world = "print('hello, world')"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise ValueError('boom')"
    code_execute_result = [{"code": "1+2+3", "result": "6"}]
    code_display_data = [
        {
            "code": "from IPython.display import HTML, display; display(HTML('<b>t</b>'))",
            "mime": "text/html",
        },
    ]
    code_history_pattern = "1?2*"
    code_stderr = "import sys; print('oops', file=sys.stderr)"
    # "range" is left out: ipykernel answers it from its history database, which is off here.
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    def test_runs_through_the_bridge(self):
        assert isinstance(self.km.provisioner, KernelHubProvisioner)
        assert self.km.provisioner.type_id == "ipykernel/python3"
