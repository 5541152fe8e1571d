"""The wire module against itself and against jupyter_client's Session (interop)."""

from __future__ import annotations

import pytest
from jupyter_client.session import Session as JCSession

from kernel_hub.wire.session import DELIM, BadSignature, Session, message_date


def test_roundtrip_and_date_is_lazy():
    s = Session("secret")
    msg = s.msg("execute_request", {"code": "1"}, metadata={"a": 1})
    frames = s.serialize(msg)
    assert frames[0] == DELIM
    back = Session("secret").deserialize(frames)
    assert back.content == {"code": "1"}
    assert back.metadata == {"a": 1}
    assert isinstance(back.header["date"], str)
    assert message_date(back).tzinfo is not None


def test_wrong_key_unsigned_and_replay_are_rejected():
    good = Session("secret")
    frames = good.serialize(good.msg("status", {"execution_state": "idle"}))
    with pytest.raises(BadSignature, match="invalid"):
        Session("other").deserialize(frames)
    unsigned = list(frames)
    unsigned[1] = b""
    with pytest.raises(BadSignature, match="unsigned"):
        Session("secret").deserialize(unsigned)
    receiver = Session("secret")
    receiver.deserialize(frames)
    with pytest.raises(BadSignature, match="replayed"):
        receiver.deserialize(frames)


def test_malformed_frames_are_value_errors():
    with pytest.raises(ValueError, match="delimiter"):
        Session("k").deserialize([b"junk"])
    with pytest.raises(ValueError, match="fewer than 5"):
        Session("k").deserialize([DELIM, b"sig"])


def test_interoperates_with_jupyter_client_session():
    ours = Session("k3y")
    theirs = JCSession(key=b"k3y")
    # theirs -> ours
    msg = theirs.msg("kernel_info_request", {})
    frames = theirs.serialize(msg)
    parsed = ours.deserialize(frames)
    assert parsed.header["msg_type"] == "kernel_info_request"
    # ours -> theirs, as a reply to their request
    reply = ours.msg("kernel_info_reply", {"status": "ok"}, parent=parsed)
    idents, rest = theirs.feed_identities(ours.serialize(reply))
    back = theirs.deserialize(rest)
    assert back["parent_header"]["msg_id"] == msg["header"]["msg_id"]
    assert back["content"] == {"status": "ok"}


def test_unsupported_signature_scheme():
    with pytest.raises(ValueError, match="hmac-sha256"):
        Session("k", "rsa-sha256")


def test_parts_that_are_not_one_object_each_are_rejected():
    s = Session("k")
    smuggled = [b"{},{}", b"{}", b"{}", b""]
    for parts in (smuggled, [b"[]", b"{}", b"{}", b"{}"], [b"{}"] * 3 + [b"1"]):
        frames = [DELIM, s.sign(parts), *parts]
        with pytest.raises(ValueError, match="bad JSON|one JSON object"):
            Session("k").deserialize(frames)


def _signed(session, header, parent, content):
    import json

    parts = [json.dumps(p).encode() for p in (header, parent, {}, content)]
    return [DELIM, session.sign(parts), *parts]


@pytest.mark.parametrize(
    ("header", "parent", "content", "complaint"),
    [
        ({"msg_id": "1"}, {}, {}, "msg_type"),
        ({"msg_id": "1", "msg_type": ""}, {}, {}, "msg_type"),
        ({"msg_id": ["1"], "msg_type": "stream"}, {}, {}, "msg_id"),
        ({"msg_type": "stream"}, {}, {}, "msg_id"),
        ({"msg_id": "1", "msg_type": "stream"}, {"msg_id": ["a", "list"]}, {}, "parent_header"),
        ({"msg_id": "1", "msg_type": "stream"}, {"msg_id": 7}, {}, "parent_header"),
        ({"msg_id": "1", "msg_type": "status"}, {}, {"execution_state": ["idle"]}, "execution"),
        ({"msg_id": "1", "msg_type": "status"}, {}, {}, "execution_state"),
    ],
)
def test_signed_messages_of_the_wrong_shape_are_value_errors(header, parent, content, complaint):
    s = Session("k")
    with pytest.raises(ValueError, match=complaint):
        s.deserialize(_signed(s, header, parent, content))


def test_signed_nesting_past_the_parser_limit_is_a_value_error():
    s = Session("k")
    deep = b"[" * 100_000
    parts = [b"{}", b"{}", b"{}", deep]
    with pytest.raises(ValueError, match="nested too deeply"):
        s.deserialize([DELIM, s.sign(parts), *parts])


def test_a_parent_without_msg_id_is_fine():
    s = Session("k")
    msg = s.deserialize(_signed(s, {"msg_id": "1", "msg_type": "stream"}, {}, {"text": "x"}))
    assert msg.parent_header == {} and msg.content == {"text": "x"}


def test_null_parent_metadata_and_content_read_as_empty_objects():
    """xeus-python 0.19's iopub_welcome has a null parent header and metadata."""
    s = Session("k")
    header = b'{"msg_id":"1","msg_type":"iopub_welcome"}'
    parts = [header, b"null", b"null", b'{"subscription":""}']
    msg = s.deserialize([b"", DELIM, s.sign(parts), *parts])
    assert msg.parent_header == {} and msg.metadata == {}
    assert msg.content == {"subscription": ""}
    parts = [b"null", b"{}", b"{}", b"{}"]
    with pytest.raises(ValueError, match="JSON object"):
        s.deserialize([DELIM, s.sign(parts), *parts])


def test_a_null_parent_msg_id_reads_as_no_parent():
    """Found by the fuzz test: ``{"msg_id": null}`` came through as a None id."""
    session = Session(b"")
    header = b'{"msg_id": "m1", "msg_type": "stream"}'
    frames = [DELIM, b"", header, b'{"msg_id": null}', b"{}", b"{}"]
    msg = session.deserialize(frames)
    assert "msg_id" not in msg.parent_header
