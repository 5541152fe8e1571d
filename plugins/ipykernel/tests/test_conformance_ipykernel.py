"""The provider conformance suite, run on the ipykernel plugin."""

from __future__ import annotations

import kernel_hub_ipykernel.plugin

from kernel_hub.testing import ProviderConformance


class TestIpykernelConformance(ProviderConformance):
    plugins = [kernel_hub_ipykernel.plugin]
    type_ids = ["ipykernel/python3"]
