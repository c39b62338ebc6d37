"""The push endpoint: Pub/Sub push envelope to ``Received``, and ack, redeliver or refuse."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import flask
import pytest
from werkzeug.exceptions import HTTPException
from werkzeug.test import Client

from ingest.contracts.outcome import Action, Outcome
from uploader.pubsub_handler import Decision, Handled, Received
from uploader.push import EnvelopeError, PushApp, PushGate, received_from_event
from uploader.push_auth import CertsUnavailableError, PushAuthError

BODY = b'{"schema_version": 1}'


def envelope(**message_overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "data": base64.b64encode(BODY).decode(),
        "attributes": {"study_instance_uid": "1.2.3"},
        "messageId": "111",
        "message_id": "111",
        "publishTime": "2024-06-10T12:00:00Z",
    }
    message.update(message_overrides)
    message = {k: v for k, v in message.items() if v is not None}
    return {"message": message, "subscription": "projects/p-123/subscriptions/uploads"}


def test_push_envelope_to_received() -> None:
    received = received_from_event(envelope(), 3)
    assert received == Received("111", BODY, {"study_instance_uid": "1.2.3"}, 3)


@pytest.mark.parametrize(
    ("overrides", "expected_id"),
    [
        ({"messageId": "camel", "message_id": None}, "camel"),
        ({"messageId": None, "message_id": "snake"}, "snake"),
        ({"messageId": "", "message_id": "snake"}, "snake"),
    ],
    ids=["messageId", "message_id", "empty-messageId"],
)
def test_either_id_spelling(overrides: dict[str, Any], expected_id: str) -> None:
    assert received_from_event(envelope(**overrides)).message_id == expected_id


def test_missing_data_and_attributes_are_empty() -> None:
    received = received_from_event(envelope(data=None, attributes=None))
    assert received.data == b""
    assert received.attributes == {}


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(None, None), (1, 1), (7, 7), ("7", None), (7.0, None)],
    ids=repr,
)
def test_delivery_attempt_is_passed_only_as_an_int(attempt: Any, expected: int | None) -> None:
    assert received_from_event(envelope(), attempt).delivery_attempt == expected


BAD_EVENTS: dict[str, tuple[Any, str]] = {
    "not-a-mapping": (["message"], "no Pub/Sub message"),
    "none": (None, "no Pub/Sub message"),
    "no-message": ({"subscription": "s"}, "no Pub/Sub message"),
    "message-not-a-mapping": ({"message": "text"}, "no Pub/Sub message"),
    "no-id": (envelope(messageId=None, message_id=None), "no id"),
    "empty-id": (envelope(messageId="", message_id=""), "no id"),
    "numeric-id": (envelope(messageId=111, message_id=None), "no id"),
    "bad-base64": (envelope(data="not base64!"), "not base64"),
    "data-not-text": (envelope(data=12345), "not base64"),
    "attributes-not-a-mapping": (envelope(attributes=["a", "b"]), "not strings"),
    "attribute-value-not-a-string": (envelope(attributes={"n": 1}), "not strings"),
    "attribute-value-none": (envelope(attributes={"n": None}), "not strings"),
}


@pytest.mark.parametrize(("data", "fragment"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_envelope_errors(data: Any, fragment: str) -> None:
    with pytest.raises(EnvelopeError, match=fragment):
        received_from_event(data)


# ---- PushApp ----


@dataclass
class FakeHandler:
    handled: Handled
    calls: list[tuple[Received, bool]] = field(default_factory=list)
    finished: list[Handled] = field(default_factory=list)

    def handle(self, received: Received, may_defer: bool = False) -> Handled:
        self.calls.append((received, may_defer))
        return self.handled

    def finish(self, handled: Handled) -> None:
        self.finished.append(handled)


@dataclass
class StubVerifier:
    error: PushAuthError | None = None
    seen: list[tuple[str | None, Any]] = field(default_factory=list)

    def verify(self, authorization: str | None, request: Any) -> dict[str, Any]:
        self.seen.append((authorization, request))
        if self.error is not None:
            raise self.error
        return {"email": "push@p-123.iam.gserviceaccount.com"}


ACK = Handled(Decision.ACK, "done", "", None, Outcome(Action.DONE))
NACK = Handled(Decision.NACK, "retry", "HTTP 503: store busy", None, Outcome(Action.RETRY))


def push(app: PushApp, body: Any, data: Any = None, headers: dict[str, str] | None = None) -> Any:
    """``app.handle`` inside a request whose JSON body is ``body``; its return value."""
    with flask.Flask(__name__).test_request_context(
        "/", method="POST", json=body, headers=headers or {}
    ):
        result: Any = app.handle(body if data is None else data, flask.request)  # type: ignore[func-returns-value]
        return result


def test_ack_returns_and_finishes() -> None:
    handler = FakeHandler(ACK)
    app = PushApp(handler)  # type: ignore[arg-type]
    assert push(app, {**envelope(), "deliveryAttempt": 4}) is None
    assert handler.finished == [ACK]
    [(received, may_defer)] = handler.calls
    assert may_defer is True
    assert received == Received("111", BODY, {"study_instance_uid": "1.2.3"}, 4)


def test_nack_is_a_503_without_finishing() -> None:
    handler = FakeHandler(NACK)
    with pytest.raises(HTTPException) as caught:
        push(PushApp(handler), envelope())  # type: ignore[arg-type]
    assert caught.value.code == 503
    assert "retry: HTTP 503: store busy" in str(caught.value.description)
    assert handler.finished == []


def test_nack_description_is_bounded() -> None:
    handler = FakeHandler(Handled(Decision.NACK, "retry", "x" * 5000))
    with pytest.raises(HTTPException) as caught:
        push(PushApp(handler), envelope())  # type: ignore[arg-type]
    assert len(str(caught.value.description)) <= 500


def test_bad_envelope_is_a_400() -> None:
    handler = FakeHandler(ACK)
    with pytest.raises(HTTPException) as caught:
        push(PushApp(handler), {"subscription": "s"})  # type: ignore[arg-type]
    assert caught.value.code == 400
    assert "no Pub/Sub message" in str(caught.value.description)
    assert handler.calls == []


def test_rejected_token_is_a_403_and_the_message_is_not_handled() -> None:
    handler = FakeHandler(ACK)
    verifier = StubVerifier(PushAuthError("token audience 'x' is not 'y'"))
    transport = object()
    app = PushApp(handler, verifier, transport)  # type: ignore[arg-type]
    with pytest.raises(HTTPException) as caught:
        push(app, envelope(), headers={"Authorization": "Bearer abc.def.ghi"})
    assert caught.value.code == 403
    assert handler.calls == []
    assert handler.finished == []
    assert verifier.seen == [("Bearer abc.def.ghi", transport)]


def test_accepted_token_lets_the_message_through() -> None:
    handler = FakeHandler(ACK)
    verifier = StubVerifier()
    app = PushApp(handler, verifier, None)  # type: ignore[arg-type]
    push(app, envelope(), headers={"Authorization": "Bearer abc.def.ghi"})
    assert len(verifier.seen) == 1
    assert len(handler.calls) == 1
    assert handler.finished == [ACK]


def test_event_data_is_used_and_the_request_body_only_for_the_attempt() -> None:
    # functions-framework hands over the CloudEvent's data; the raw body carries the attempt.
    handler = FakeHandler(ACK)
    body = {**envelope(messageId="from-body"), "deliveryAttempt": 2}
    push(PushApp(handler), body, data=envelope(messageId="from-event"))  # type: ignore[arg-type]
    [(received, _)] = handler.calls
    assert received.message_id == "from-event"
    assert received.delivery_attempt == 2


# ---- PushGate ----


def _gated(verifier: Any = None, limit: int = 100) -> tuple[PushGate, list[bytes]]:
    """A gate in front of an app that records the body it reads."""
    bodies: list[bytes] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        bodies.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"OK"]

    app = PushApp(FakeHandler(ACK), verifier, None, limit)  # type: ignore[arg-type]
    return PushGate(inner, app), bodies


def test_the_gate_checks_the_token_before_the_body() -> None:
    verifier = StubVerifier(PushAuthError("token has expired"))
    gate, bodies = _gated(verifier)
    answer = Client(gate).post("/", data=b"x" * 1000)
    assert answer.status_code == 403
    assert bodies == []


def test_the_gate_answers_503_when_certificates_are_unavailable() -> None:
    gate, bodies = _gated(StubVerifier(CertsUnavailableError("certificates answered 500")))
    assert Client(gate).post("/", data=b"{}").status_code == 503
    assert bodies == []


@pytest.mark.parametrize(("size", "status"), [(100, 200), (101, 413)])
def test_the_gate_limits_the_declared_length(size: int, status: int) -> None:
    gate, bodies = _gated(StubVerifier())
    answer = Client(gate).post("/", data=b"x" * size, headers={"Authorization": "Bearer a"})
    assert answer.status_code == status
    assert bodies == ([b"x" * size] if status == 200 else [])


def test_push_app_needs_a_positive_body_limit() -> None:
    with pytest.raises(ValueError):
        PushApp(FakeHandler(ACK), None, None, 0)  # type: ignore[arg-type]
