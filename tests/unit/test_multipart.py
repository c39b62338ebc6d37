"""The streamed multipart/related STOW-RS body."""

from __future__ import annotations

import email.parser
import email.policy
import io
import random
from email.message import Message

import pytest

from ingest.adapters.multipart import CONTENT_TYPE, MultipartBody, content_type, new_boundary

BOUNDARY = "dicom-ingest-0123456789abcdef"


def payloads() -> list[bytes]:
    rng = random.Random(7)
    return [
        bytes(rng.randrange(256) for _ in range(5000)),
        b"",
        b"x",
        b"line one\r\nline two\n\r\n--not-the-boundary\r\n",
        bytes(rng.randrange(256) for _ in range(10_000)),
    ]


def make_body(parts: list[bytes], boundary: str = BOUNDARY) -> MultipartBody:
    return MultipartBody([(io.BytesIO(p), len(p)) for p in parts], boundary)


def read_all(body: MultipartBody, chunk: int) -> bytes:
    out = bytearray()
    while True:
        data = body.read(chunk)
        if not data:
            return bytes(out)
        out += data


def parse(data: bytes, boundary: str) -> Message:
    head = f"Content-Type: {content_type(boundary)}\r\n\r\n".encode()
    return email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)


def test_len_equals_bytes_read() -> None:
    body = make_body(payloads())
    data = body.read()
    assert len(body) == len(data)
    assert body.read() == b""


@pytest.mark.parametrize("chunk", [1, 7, 4096, -1])
def test_chunk_size_does_not_change_the_bytes(chunk: int) -> None:
    reference = make_body(payloads()).read()
    assert read_all(make_body(payloads()), chunk) == reference


def test_read_none_reads_everything() -> None:
    body = make_body(payloads())
    assert body.read(None) == make_body(payloads()).read()  # type: ignore[arg-type]


def test_read_zero_returns_nothing() -> None:
    body = make_body([b"abc"])
    assert body.read(0) == b""
    assert len(body.read()) == len(body)


def test_exact_framing() -> None:
    data = make_body([b"AAA", b"BB"], "b1").read()
    assert data == (
        b"--b1\r\nContent-Type: application/dicom\r\n\r\nAAA"
        b"\r\n--b1\r\nContent-Type: application/dicom\r\n\r\nBB"
        b"\r\n--b1--\r\n"
    )


def test_parses_as_multipart_related_into_the_original_payloads() -> None:
    parts = payloads()
    boundary = new_boundary()
    message = parse(make_body(parts, boundary).read(), boundary)
    assert message.get_content_type() == "multipart/related"
    assert message.get_param("type") == CONTENT_TYPE
    assert not message.defects
    received = message.get_payload()
    assert isinstance(received, list)
    assert len(received) == len(parts)
    for part, original in zip(received, parts, strict=True):
        assert part.get_content_type() == CONTENT_TYPE
        assert part.get_payload(decode=True) == original


def only_part(message: Message) -> Message:
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert len(parts) == 1
    part = parts[0]
    assert isinstance(part, Message)
    return part


def test_single_part() -> None:
    message = parse(make_body([b"\x00DICM\x00"]).read(), BOUNDARY)
    assert only_part(message).get_payload(decode=True) == b"\x00DICM\x00"


def test_reads_only_the_declared_size_of_each_handle() -> None:
    handle = io.BytesIO(b"declared-part-and-trailing-junk")
    body = MultipartBody([(handle, len(b"declared-part"))], BOUNDARY)
    data = body.read()
    assert len(data) == len(body)
    assert only_part(parse(data, BOUNDARY)).get_payload(decode=True) == b"declared-part"


def test_short_handle_raises() -> None:
    body = MultipartBody([(io.BytesIO(b"only ten!!"), 100)], BOUNDARY)
    with pytest.raises(OSError, match="ended before its recorded size"):
        read_all(body, 7)


def test_short_handle_raises_on_read_all() -> None:
    body = MultipartBody([(io.BytesIO(b"x" * 10), 10), (io.BytesIO(b"y" * 5), 6)], BOUNDARY)
    with pytest.raises(OSError):
        body.read()


def test_new_boundary_is_random_and_well_formed() -> None:
    boundaries = {new_boundary() for _ in range(20)}
    assert len(boundaries) == 20
    for boundary in boundaries:
        assert boundary.startswith("dicom-ingest-")
        assert len(boundary) <= 70  # RFC 2046 limit
        assert boundary.replace("-", "").isalnum()


def test_content_type_header() -> None:
    assert content_type("abc") == 'multipart/related; type="application/dicom"; boundary=abc'
