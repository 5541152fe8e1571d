"""The kernel_hub conformance suite, run on the nice provider."""

from __future__ import annotations

import kernel_hub_nice.plugin

from kernel_hub.testing import ProviderConformance


class TestNiceConformance(ProviderConformance):
    plugins = [kernel_hub_nice.plugin]
    type_ids = ["nice/python3"]
    config = {"nice": {"niceness": 7}}
