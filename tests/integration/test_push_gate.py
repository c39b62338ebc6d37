"""The push function's gate: the token, then the body size, before the body is read.

functions-framework reads and parses a request's whole body before it calls the function;
``PushGate`` answers first. Requests go over raw sockets so that a test can send the headers
of a large body and little or none of the body itself: an answer that comes anyway proves the
body was not waited for.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cloud import UploaderFunction
from support.gcs import FakeGcs
from support.oidc import LocalIssuer

# A functions-framework process: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

PUSHER = "pubsub-push@test-project.iam.gserviceaccount.com"
AUDIENCE = "https://uploader.example.internal/"
LIMIT = 64 << 10
HUGE = 60 << 20


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as started:
        yield started


@pytest.fixture
def function(issuer: LocalIssuer, fake_gcs: FakeGcs, pubsub: str) -> Iterator[UploaderFunction]:
    started = UploaderFunction(
        {
            "DICOM_INGEST_DICOMWEB_ADDRESS": "http://127.0.0.1:9/dicomWeb",
            "DICOM_INGEST_PUSH_AUDIENCE": AUDIENCE,
            "DICOM_INGEST_PUSH_SERVICE_ACCOUNT": PUSHER,
            "DICOM_INGEST_PUSH_CERTS_URL": issuer.certs_url,
            "DICOM_INGEST_PUSH_MAX_BODY_BYTES": str(LIMIT),
        }
    )
    try:
        yield started
    finally:
        started.stop()


def _request(
    port: int, headers: dict[str, str], body: bytes = b"", timeout: float = 10.0
) -> tuple[int, bytes]:
    """Send the headers and ``body`` (maybe less than declared); the status and answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = "POST / HTTP/1.1\r\nHost: uploader\r\nContent-Type: application/json\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        # The server may answer and close while the body is on its way.
        with contextlib.suppress(OSError):
            sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _chunked(body: bytes, size: int = 16 << 10) -> bytes:
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def _rss_kib(pid: int) -> int:
    """Resident memory of the process and its children (the server's workers)."""
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _envelope(padding: int = 0) -> bytes:
    """A push envelope whose message is not an instance message: the function dead-letters
    it, and without a dead-letter topic answers 503 saying why."""
    message = {"data": base64.b64encode(b"not json").decode(), "messageId": "7"}
    body = {"message": message, "subscription": "projects/p/subscriptions/s"}
    return json.dumps({**body, "padding": " " * padding}).encode()


def _signed(issuer: LocalIssuer) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.sign(AUDIENCE, PUSHER)}"}


def test_an_unsigned_request_is_refused_before_its_body_is_sent(
    function: UploaderFunction,
) -> None:
    # 60 MB declared, none of it sent: the answer comes without waiting for the body.
    status, _ = _request(function.port, {"Content-Length": str(HUGE)})
    assert status == 403
    status, _ = _request(
        function.port, {"Content-Length": str(HUGE), "Authorization": "Bearer not-a-token"}
    )
    assert status == 403


def test_an_oversize_body_is_refused_unread_and_memory_does_not_grow(
    function: UploaderFunction, issuer: LocalIssuer
) -> None:
    headers = {**_signed(issuer), "Content-Length": str(HUGE)}
    status, answer = _request(function.port, headers)  # headers only: never read
    assert status == 413
    assert f"over {LIMIT} bytes".encode() in answer
    before = _rss_kib(function.process.pid)  # after the first request's warm-up
    for _ in range(4):  # and with 8 MiB of the body on its way each time
        status, _ = _request(function.port, headers, b"x" * (8 << 20))
        assert status == 413
    grown = _rss_kib(function.process.pid) - before
    assert grown < 4 << 10, f"RSS grew by {grown} KiB"  # read, one body would be 60 MiB
    assert "over the 65536 byte limit" in function.output()


def test_a_chunked_body_is_read_only_to_the_limit(
    function: UploaderFunction, issuer: LocalIssuer
) -> None:
    headers = {**_signed(issuer), "Transfer-Encoding": "chunked"}
    status, _ = _request(function.port, headers, _chunked(b" " * (LIMIT + 1)))
    assert status == 413
    # Within the limit the body reaches the function, which judges it (no message: 400).
    status, answer = _request(function.port, headers, _chunked(_envelope()))
    assert status == 503, answer
    assert b"undecodable message" in answer


def test_a_signed_body_within_the_limit_reaches_the_function(
    function: UploaderFunction, issuer: LocalIssuer
) -> None:
    body = _envelope(LIMIT - len(_envelope()))
    assert len(body) == LIMIT
    status, answer = _request(
        function.port, {**_signed(issuer), "Content-Length": str(len(body))}, body
    )
    assert status == 503, answer
    assert b"undecodable message" in answer
    status, _ = _request(function.port, {"Content-Length": "12x", **_signed(issuer)})
    assert status == 400
