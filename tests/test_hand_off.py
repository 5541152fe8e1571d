"""``KernelHub.hand_off``: give a kernel to another hub, which attaches it; it keeps running."""

from __future__ import annotations

import asyncio

import pytest

from kernel_hub import KernelHub
from kernel_hub.contract.errors import KernelHubError
from kernel_hub.lifecycle.state import StateDir
from kernel_hub.testing import pid_alive, wait_pid_gone

TYPE = "ipykernel/python3"


async def printed(kernel, code: str) -> str:
    out: list[str] = []

    def hook(msg):
        if msg.header["msg_type"] == "stream":
            out.append(msg.content.get("text", ""))

    async with kernel.client() as client:
        await client.execute(code, timeout=60, output_hook=hook)
    return "".join(out).strip()


@pytest.mark.integration
def test_a_handed_off_kernel_runs_on_for_the_hub_that_attaches_it(tmp_path):
    state = tmp_path / "state"

    async def main() -> int:
        giver = KernelHub(state_dir=state, grace=30, config={})
        taker = KernelHub(config={})
        async with giver, taker:
            kernel = await giver.launch(TYPE)
            assert await printed(kernel, "x = 6 * 7; print(x)") == "42"
            assert [r.kernel_id for r in StateDir(state).records()] == [kernel.id]
            described = await giver.hand_off(kernel)
            # Forgotten, not ended: no registry entry, no record, no watch; the process runs.
            assert kernel.status == "DETACHED"
            assert kernel.id not in giver.kernels
            assert StateDir(state).records() == []
            pid = described["state"]["kernel_pid"]
            assert pid_alive(pid)
            taken = await taker.attach(**described)
            assert await printed(taken, "print(x)") == "42"  # the same kernel, its variables
            await taken.shutdown()
            return pid

    pid = asyncio.run(main())
    assert wait_pid_gone(pid, 30)


@pytest.mark.integration
def test_a_kernel_that_ends_with_its_hub_is_not_handed_off():
    async def main() -> None:
        async with KernelHub(config={}) as hub:
            kernel = await hub.launch(TYPE)
            with pytest.raises(KernelHubError, match="launched to end with this process"):
                await hub.hand_off(kernel)
            assert kernel.status == "RUNNING" and kernel.id in hub.kernels

    asyncio.run(main())
