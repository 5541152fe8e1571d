"""The dial-back handshake without Slurm: a real nanny (nanny.py --register) and the endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid

import pytest
import zmq
import zmq.asyncio
from kernel_hub_slurm.registration import RegistrationEndpoint

from kernel_hub.conformance import execute_output
from kernel_hub.provider import NannyManager, nanny_source
from kernel_hub.testing import hmac_sha256

DELIM = b"<IDS|MSG>"


def _message(key, msg_type, content):
    """A Jupyter multipart message as the nanny's dial-back sends it, signed with *key*."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": "s", "version": "5.3"}
    parts = [json.dumps(x).encode() for x in (header, {}, {}, content)]
    return [DELIM, hmac_sha256(key, parts), *parts]


@pytest.mark.asyncio
async def test_bad_signatures_are_dropped_and_a_good_one_is_acknowledged():
    endpoint = RegistrationEndpoint()
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint.url)
    try:
        receive = asyncio.ensure_future(endpoint.receive())
        await sock.send_multipart(_message(b"not-the-key", "nanny_register", {"x": 1}))
        await sock.send_multipart([b"garbage"])
        key = endpoint.key.encode()
        await sock.send_multipart(_message(key, "nanny_register", {"x": 2}))
        assert await asyncio.wait_for(receive, 30) == {"x": 2}
        assert endpoint.bad_signatures == 2
        reply = await asyncio.wait_for(sock.recv_multipart(), 30)
        assert reply[0] == DELIM
        assert reply[1] == hmac_sha256(key, reply[2:6])  # signed with the key
        assert json.loads(reply[2])["msg_type"] == "nanny_registered"
    finally:
        sock.close()
        ctx.term()
        endpoint.close()
    assert repr(endpoint).endswith("[CLOSED]>")


@pytest.mark.integration
@pytest.mark.asyncio
async def test_nanny_dials_back_without_sending_the_key(tmp_path):
    endpoint = RegistrationEndpoint()
    job_dir = tmp_path / "job"
    job_dir.mkdir(mode=0o700)
    (job_dir / "nanny.py").write_text(nanny_source())
    register = job_dir / "register.json"
    fd = os.open(register, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": endpoint.url, "key": endpoint.key, "env": {"KH_TEST": "dialled"}}, f)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(job_dir / "nanny.py"), "--register", str(register)
    )
    manager = None
    try:
        content = await asyncio.wait_for(endpoint.receive(), 60)
        endpoint.close()
        assert not register.exists()  # read and deleted first
        assert endpoint.key not in json.dumps(content)
        assert content["connection_info"]["ip"] == "127.0.0.1"  # "auto" on the route to us
        info = {**content["connection_info"], "key": endpoint.key}
        manager = NannyManager(info, content)
        assert await manager.is_alive()
        from kernel_hub import AsyncKernelClient

        async with AsyncKernelClient(info, manager=manager) as client:
            await client.wait_for_ready(timeout=60)
            _, text = await execute_output(
                client, "import os; print(os.environ['KH_TEST'])", timeout=60
            )
        assert text.strip() == "dialled"
        await manager.cleanup()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert not os.path.exists(content["workdir"])
    finally:
        endpoint.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if manager is not None:
            manager.close()
