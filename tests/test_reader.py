"""The AMI reader on real captures and on hostile bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from ami_daemon.ami.reader import (
    MAX_MESSAGE_BYTES,
    Malformed,
    StreamDecoder,
    iter_messages,
    read_capture,
)
from tests.paths import TRACES

CAPTURES = sorted(TRACES.glob("asterisk20/*/ami.raw")) + sorted(TRACES.glob("cacofonisk/*/*.ami"))
CYRILLIC_EVENT = (
    "Event: Newchannel\r\nChannel: SIP/trunk-00000001\r\nCallerIDNum: 600111222\r\n"
    "CallerIDName: Иван Петров\r\nUniqueid: 1.1\r\n\r\n"
    "Event: Newchannel\r\nChannel: SIP/trunk-00000002\r\nCallerIDName: José Ñúñez\r\n"
    "Uniqueid: 1.2\r\n\r\n"
).encode()


def decode_in_chunks(data: bytes, size: int) -> tuple[list[list[tuple[str, str]]], list[Malformed]]:
    errors: list[Malformed] = []
    decoder = StreamDecoder(errors.append)
    out = []
    for i in range(0, len(data), size):
        out.extend(decoder.feed(data[i : i + size]))
    out.extend(decoder.close())
    return [m.headers for m in out], errors


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_capture_parses_without_errors_and_offsets_point_at_messages(capture: Path) -> None:
    data = capture.read_bytes()
    errors: list[Malformed] = []
    messages = list(read_capture(capture, errors.append))
    assert errors == []
    assert messages, "a capture holds messages"
    for message in messages:
        first_key = message.headers[0][0]
        assert data[message.offset :].startswith(first_key.encode()), message.offset
    assert all("Event" in m or "Response" in m for m in messages)


def test_banner_is_read_and_not_a_message() -> None:
    data = b"Asterisk Call Manager/9.0.0\r\nResponse: Success\r\nMessage: ok\r\n\r\n"
    decoder = StreamDecoder()
    messages = decoder.feed(data)
    assert decoder.banner == "Asterisk Call Manager/9.0.0"
    assert messages == [{"Response": "Success", "Message": "ok"}]


def test_lf_only_capture_gives_the_same_messages_as_crlf() -> None:
    data = (TRACES / "asterisk20/04_inbound_queue_201_blind_transfer_to_202/ami.raw").read_bytes()
    crlf, _ = decode_in_chunks(data, 65536)
    lf, _ = decode_in_chunks(data.replace(b"\r\n", b"\n"), 65536)
    assert lf == crlf and len(crlf) > 100


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_multibyte_characters_split_across_reads_arrive_intact(size: int) -> None:
    headers, errors = decode_in_chunks(CYRILLIC_EVENT, size)
    assert errors == []
    names = [dict(h)["CallerIDName"] for h in headers]
    assert names == ["Иван Петров", "José Ñúñez"]


def test_every_split_point_of_a_real_capture_gives_the_same_messages() -> None:
    data = (TRACES / "asterisk20/01_inbound_queue_201_caller_hangup/ami.raw").read_bytes()[:6000]
    whole, _ = decode_in_chunks(data, len(data))
    for cut in range(1, len(data), 97):
        decoder = StreamDecoder()
        parts = decoder.feed(data[:cut]) + decoder.feed(data[cut:]) + decoder.close()
        assert [m.headers for m in parts] == whole


def test_repeated_keys_keep_order_and_first_value_wins() -> None:
    data = b"Event: Newchannel\r\nChanVariable: A=1\r\nChanVariable: B=2\r\n\r\n"
    (message,) = list(iter_messages(data))
    assert message["ChanVariable"] == "A=1"
    assert message.get_all("ChanVariable") == ["A=1", "B=2"]


def test_header_without_colon_is_reported_with_offset_and_the_rest_kept() -> None:
    good = b"Event: Ping\r\n\r\n"
    bad = b"Event: Hangup\r\nthis line has no colon\r\nUniqueid: 9.9\r\n\r\n"
    headers, errors = decode_in_chunks(good + bad, 5)
    assert headers[1] == [("Event", "Hangup"), ("Uniqueid", "9.9")]
    assert len(errors) == 1 and errors[0].offset == len(good)
    assert "without 'Key: Value'" in errors[0].reason


def test_binary_garbage_is_reported_and_following_messages_survive() -> None:
    garbage = bytes(range(256)).replace(b"\n", b"") + b"\r\n\r\n"
    data = garbage + b"Event: Hangup\r\nUniqueid: 1.1\r\n\r\n"
    headers, errors = decode_in_chunks(data, 13)
    assert headers[-1] == [("Event", "Hangup"), ("Uniqueid", "1.1")]
    assert errors and errors[0].offset == 0


def test_truncated_last_message_is_returned_and_reported() -> None:
    data = b"Event: Hangup\r\nUniqueid: 1.1\r\n\r\nEvent: Hangup\r\nUniqueid: 2."
    headers, errors = decode_in_chunks(data, 1000)
    assert headers[-1] == [("Event", "Hangup"), ("Uniqueid", "2.")]
    assert [e.reason for e in errors] == ["message truncated at end of input"]


def test_one_megabyte_header_value_is_parsed() -> None:
    value = "x" * (1024 * 1024)
    data = f"Event: UserEvent\r\nBody: {value}\r\n\r\nEvent: Ping\r\n\r\n".encode()
    headers, errors = decode_in_chunks(data, 4096)
    assert errors == [] and dict(headers[0])["Body"] == value and headers[1] == [("Event", "Ping")]


def test_message_over_the_limit_is_dropped_and_the_stream_resynchronises() -> None:
    flood = b"Event: Flood\r\nBody: " + b"y" * (MAX_MESSAGE_BYTES + 10)
    data = flood + b"\r\n\r\nEvent: Ping\r\n\r\n"
    headers, errors = decode_in_chunks(data, 1 << 16)
    assert any("over" in e.reason for e in errors)
    assert headers[-1] == [("Event", "Ping")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    data = b"Event: Newchannel\r\nCallerIDName: \xff\xfe bad\r\n\r\n"
    headers, errors = decode_in_chunks(data, 3)
    assert dict(headers[0])["CallerIDName"] == "\ufffd\ufffd bad"
    assert errors == []
