"""One Pub/Sub message through the outcome table: ack, nack, dead-letter or defer."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.fakes import RecordingPublisher
from support.messages import make_message as base_message

from ingest.contracts import metrics
from ingest.contracts.message import InstanceMessage, encode
from ingest.contracts.outcome import Action, Outcome
from uploader.pubsub_handler import (
    DEAD_LETTER_ATTRIBUTES,
    DEFERRED_ATTRIBUTE,
    REASON_ATTRIBUTE,
    SOURCE_ATTRIBUTE,
    Decision,
    Handled,
    PubSubHandler,
    Received,
)

MESSAGE_ID = "1234567890"
UPLOADED = Outcome(Action.DONE)


def make_message(**overrides: Any) -> InstanceMessage:
    return base_message(
        **{
            "uri": "gs://bucket/dicom/1.2.3/1.2.3.4/1.2.3.4.5.dcm",
            "generation": "1718000000000000",
            **overrides,
        }
    )


def make_received(
    message: InstanceMessage | None = None,
    data: bytes | None = None,
    attributes: dict[str, str] | None = None,
) -> Received:
    message = message or make_message()
    return Received(
        MESSAGE_ID,
        encode(message) if data is None else data,
        message.attributes if attributes is None else attributes,
        delivery_attempt=1,
    )


@dataclass
class FakeService:
    """``UploadService``'s two calls, answering with a fixed outcome (or raising)."""

    outcome: Outcome = UPLOADED
    error: Exception | None = None
    processed: list[list[InstanceMessage]] = field(default_factory=list)
    finished: list[tuple[InstanceMessage, Outcome]] = field(default_factory=list)

    def process(self, messages: list[InstanceMessage]) -> list[Outcome]:
        self.processed.append(list(messages))
        if self.error is not None:
            raise self.error
        return [self.outcome for _ in messages]

    def finish(self, message: InstanceMessage, outcome: Outcome) -> None:
        self.finished.append((message, outcome))


def make_handler(
    service: FakeService,
    dead_letters: RecordingPublisher | None = None,
    oversize: RecordingPublisher | None = None,
    push_max_bytes: int | None = None,
) -> PubSubHandler:
    return PubSubHandler(service, dead_letters, oversize, push_max_bytes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Row:
    outcome: Outcome
    decision: Decision
    result: str
    dead_lettered: bool = False


ROWS = {
    "done": Row(Outcome(Action.DONE), Decision.ACK, "done"),
    "superseded": Row(Outcome(Action.SUPERSEDED, "newer version"), Decision.ACK, "superseded"),
    "skipped": Row(Outcome(Action.SKIPPED, "exists"), Decision.ACK, "skipped"),
    "retry": Row(Outcome(Action.RETRY, "HTTP 503"), Decision.NACK, "retry"),
    "dead": Row(Outcome(Action.DEAD, "HTTP 400: bad"), Decision.ACK, "dead-lettered", True),
    "conflict": Row(
        Outcome(Action.CONFLICT, "instance exists"), Decision.ACK, "dead-lettered", True
    ),
}


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_outcome_table(row: Row) -> None:
    service = FakeService(outcome=row.outcome)
    dead_letters = RecordingPublisher()
    received = make_received()
    handled = make_handler(service, dead_letters).handle(received)
    assert handled.decision is row.decision
    assert handled.result == row.result
    assert handled.reason == row.outcome.reason
    assert handled.message == make_message()
    assert service.processed == [[make_message()]]
    if row.dead_lettered:
        assert len(dead_letters.published) == 1
        body, attributes = dead_letters.published[0]
        assert body == received.data
        assert attributes[REASON_ATTRIBUTE] == row.outcome.reason
        assert attributes[SOURCE_ATTRIBUTE] == MESSAGE_ID
        assert handled.outcome is None
    else:
        assert dead_letters.published == []
        assert handled.outcome == row.outcome


def test_dead_letter_without_reason_names_the_action() -> None:
    dead_letters = RecordingPublisher()
    handled = make_handler(FakeService(Outcome(Action.DEAD)), dead_letters).handle(make_received())
    assert handled.reason == "dead"
    assert dead_letters.published[0][1][REASON_ATTRIBUTE] == "dead"


def test_dead_letter_keeps_attributes_and_drops_old_dead_letter_ones() -> None:
    original = make_message().attributes
    stale = {name: f"stale {name}" for name in DEAD_LETTER_ATTRIBUTES}
    received = make_received(attributes={**original, **stale, "custom": "kept"})
    dead_letters = RecordingPublisher()
    make_handler(FakeService(Outcome(Action.DEAD, "permanent")), dead_letters).handle(received)
    (_, attributes) = dead_letters.published[0]
    assert attributes == {
        **original,
        "custom": "kept",
        REASON_ATTRIBUTE: "permanent",
        SOURCE_ATTRIBUTE: MESSAGE_ID,
    }


@pytest.mark.parametrize(
    "reason",
    [
        "x" * 5000,
        "é" * 1000,  # two bytes each: a cut may fall inside a character
        "🩻" * 300,  # four bytes each
        "ab" + "€" * 400,  # three bytes each, offset by two
    ],
    ids=["ascii", "two-byte", "four-byte", "three-byte-offset"],
)
def test_long_reason_is_truncated_to_the_attribute_limit(reason: str) -> None:
    dead_letters = RecordingPublisher()
    handler = make_handler(FakeService(Outcome(Action.DEAD, reason)), dead_letters)
    handled = handler.handle(make_received())
    value = dead_letters.published[0][1][REASON_ATTRIBUTE]
    encoded = value.encode("utf-8")
    assert len(encoded) <= 1024
    assert len(encoded) > 1024 - 8  # cut at the limit, not far below it
    assert value.endswith("...")
    assert reason.startswith(value[:-3])
    assert "\ufffd" not in value
    assert handled.reason == reason  # the handler's own record keeps the whole reason


def test_reason_at_the_limit_is_kept_whole() -> None:
    reason = "y" * 1024
    dead_letters = RecordingPublisher()
    make_handler(FakeService(Outcome(Action.DEAD, reason)), dead_letters).handle(make_received())
    assert dead_letters.published[0][1][REASON_ATTRIBUTE] == reason


def test_dead_letter_publish_failure_is_a_nack() -> None:
    dead_letters = RecordingPublisher(error=RuntimeError("topic unavailable"))
    handled = make_handler(FakeService(Outcome(Action.DEAD, "permanent")), dead_letters).handle(
        make_received()
    )
    assert handled.decision is Decision.NACK
    assert handled.result == "dead"
    assert handled.reason == "permanent"


def test_without_dead_letter_topic_a_permanent_failure_is_a_nack() -> None:
    handled = make_handler(FakeService(Outcome(Action.DEAD, "permanent"))).handle(make_received())
    assert handled.decision is Decision.NACK
    assert handled.result == "dead"
    assert handled.reason == "permanent"


@pytest.mark.parametrize(
    "data", [b"not json", b"[]", b'{"schema_version": 99}', b"\xff\xfe"], ids=repr
)
def test_undecodable_message_is_dead_lettered(data: bytes) -> None:
    service = FakeService()
    dead_letters = RecordingPublisher()
    received = make_received(data=data, attributes={"origin": "somewhere"})
    handled = make_handler(service, dead_letters).handle(received)
    assert handled.decision is Decision.ACK
    assert handled.result == "dead-lettered"
    assert handled.reason.startswith("undecodable message")
    assert handled.message is None
    assert service.processed == []
    body, attributes = dead_letters.published[0]
    assert body == data
    assert attributes["origin"] == "somewhere"
    assert attributes[REASON_ATTRIBUTE].startswith("undecodable message")
    assert attributes[SOURCE_ATTRIBUTE] == MESSAGE_ID


def test_undecodable_message_without_dead_letter_topic_is_a_nack() -> None:
    handled = make_handler(FakeService()).handle(make_received(data=b"garbage"))
    assert handled.decision is Decision.NACK
    assert handled.result == "dead"


def test_unexpected_service_error_is_a_retry_with_the_exception_text() -> None:
    service = FakeService(error=RuntimeError("boom"))
    dead_letters = RecordingPublisher()
    handled = make_handler(service, dead_letters).handle(make_received())
    assert handled.decision is Decision.NACK
    assert handled.result == "retry"
    assert handled.reason == "RuntimeError: boom"
    assert handled.outcome == Outcome(Action.RETRY, "RuntimeError: boom")
    assert dead_letters.published == []


def test_oversize_instance_is_deferred_when_allowed() -> None:
    service = FakeService()
    oversize = RecordingPublisher()
    message = make_message(size=2000)
    received = make_received(message, attributes={**message.attributes, "custom": "kept"})
    handler = make_handler(service, oversize=oversize, push_max_bytes=1000)
    handled = handler.handle(received, may_defer=True)
    assert handled.decision is Decision.ACK
    assert handled.result == "deferred"
    assert "published-1" in handled.reason
    assert handled.outcome is None
    assert service.processed == []
    assert oversize.published == [
        (
            received.data,
            {**message.attributes, "custom": "kept", DEFERRED_ATTRIBUTE: MESSAGE_ID},
        )
    ]


@pytest.mark.parametrize(
    ("size", "may_defer", "has_oversize_topic"),
    [
        (2000, False, True),  # the pull worker and replay never defer
        (1000, True, True),  # at the limit: uploaded here
        (2000, True, False),  # nowhere to defer to
    ],
    ids=["may-not-defer", "at-limit", "no-oversize-topic"],
)
def test_not_deferred(size: int, may_defer: bool, has_oversize_topic: bool) -> None:
    service = FakeService()
    oversize = RecordingPublisher() if has_oversize_topic else None
    handler = make_handler(service, oversize=oversize, push_max_bytes=1000)
    handled = handler.handle(make_received(make_message(size=size)), may_defer=may_defer)
    assert handled.result == "done"
    assert len(service.processed) == 1
    assert oversize is None or oversize.published == []


def test_oversize_publish_failure_is_a_nack() -> None:
    service = FakeService()
    oversize = RecordingPublisher(error=RuntimeError("quota"))
    handler = make_handler(service, oversize=oversize, push_max_bytes=1000)
    handled = handler.handle(make_received(make_message(size=2000)), may_defer=True)
    assert handled.decision is Decision.NACK
    assert handled.result == "retry"
    assert "oversize publish failed" in handled.reason
    assert "quota" in handled.reason
    assert service.processed == []


def test_finish_after_an_upload_calls_the_service() -> None:
    service = FakeService(Outcome(Action.DONE))
    handler = make_handler(service)
    handled = handler.handle(make_received())
    handler.finish(handled)
    assert service.finished == [(make_message(), Outcome(Action.DONE))]


@pytest.mark.parametrize(
    "handled",
    [
        Handled(Decision.ACK, "dead-lettered", "why", make_message(), None),
        Handled(Decision.ACK, "dead-lettered", "undecodable message", None, None),
        Handled(Decision.ACK, "deferred", "deferred as message 1", make_message(), None),
        Handled(Decision.ACK, "done", "", None, Outcome(Action.DONE)),
    ],
    ids=["dead-lettered", "undecodable", "deferred", "no-message"],
)
def test_finish_needs_a_message_and_an_outcome(handled: Handled) -> None:
    service = FakeService()
    make_handler(service).finish(handled)
    assert service.finished == []


@pytest.mark.parametrize(
    ("attempt", "deferred"), [(None, False), (1, False), (3, False), (4, True), (9, True)]
)
def test_a_message_pushed_often_enough_goes_to_the_pull_worker(
    attempt: int | None, deferred: bool
) -> None:
    """A push that outlives its deadline is cut off before it can say so; after the allowed
    attempts the pull worker, which has no time limit, takes the message."""
    service = FakeService()
    oversize = RecordingPublisher()
    handler = PubSubHandler(
        service,  # type: ignore[arg-type]
        None,
        oversize,
        push_max_bytes=1 << 30,
        push_max_attempts=3,
    )
    message = make_message(size=10)
    received = dataclasses.replace(make_received(message), delivery_attempt=attempt)
    handled = handler.handle(received, may_defer=True)
    assert (handled.result == "deferred") is deferred
    assert len(oversize.published) == (1 if deferred else 0)
    assert len(service.processed) == (0 if deferred else 1)
    # The pull worker itself never defers, whatever the attempt.
    assert handler.handle(received, may_defer=False).result == "done"


@pytest.mark.parametrize(
    ("data", "outcome", "reason"),
    [
        (None, Outcome(Action.DEAD, "HTTP 400: Bad Request"), "HTTP 400: Bad Request"),
        (b"not json", UPLOADED, "undecodable message"),
    ],
    ids=["refused-by-the-store", "undecodable"],
)
def test_a_dead_letter_is_one_error_line_with_its_reason(
    data: bytes | None, outcome: Outcome, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = metrics.DEAD_LETTERS._value.get()
    make_handler(FakeService(outcome), RecordingPublisher()).handle(make_received(data=data))
    [record] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith(f"dead letter: {reason}")
    assert record.dead_letter_reason.startswith(reason)  # type: ignore[attr-defined]
    assert record.message_id == MESSAGE_ID  # type: ignore[attr-defined]
    assert metrics.DEAD_LETTERS._value.get() - before == 1


def test_a_failing_upload_warns_on_its_first_delivery_and_says_when_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    failing = make_handler(FakeService(Outcome(Action.RETRY, "HTTP 503: busy")))
    for attempt in (1, 2, 3):
        received = dataclasses.replace(make_received(), delivery_attempt=attempt)
        assert failing.handle(received).decision is Decision.NACK
    uploading = make_handler(FakeService(UPLOADED))
    uploading.handle(dataclasses.replace(make_received(), delivery_attempt=4))
    seen = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert seen == [
        ("WARNING", "upload failing, will retry: HTTP 503: busy"),
        ("DEBUG", "upload failing, will retry: HTTP 503: busy"),
        ("DEBUG", "upload failing, will retry: HTTP 503: busy"),
        ("INFO", "upload recovered after 4 attempts"),
    ]
