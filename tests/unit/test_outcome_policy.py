"""The one outcome policy: per action how a queue settles, per HTTP status and per exception
of the object store or the transport which action; and every queue settling by it."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from google.auth.exceptions import RefreshError, TransportError
from support.fakes import RecordingPublisher
from support.messages import make_message

from ingest.adapters.http_deadline import DeadlineExceeded
from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.contracts.message import encode
from ingest.contracts.outcome import (
    POLICY,
    Action,
    Outcome,
    Settle,
    error_outcome,
    http_outcome,
    retryable_status,
)
from ingest.contracts.ports import ObjectBusy, ObjectMissing, ObjectStoreError, ObjectSuperseded
from ingest.workers import Backoff, settle
from uploader.pubsub_handler import Decision, PubSubHandler, Received

EXPECTED = {
    Action.DONE: Settle.ACK,
    Action.SUPERSEDED: Settle.ACK,
    Action.SKIPPED: Settle.ACK,
    Action.RETRY: Settle.RETRY,
    Action.DEAD: Settle.DEAD_LETTER,
    Action.CONFLICT: Settle.DEAD_LETTER,  # unresolved by the service: permanent
    Action.SPLIT: Settle.DEAD_LETTER,
}


def test_every_action_has_one_policy() -> None:
    assert set(POLICY) == set(Action)
    assert dict(POLICY) == EXPECTED


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_outcome_settles_by_the_table(action: Action) -> None:
    outcome = Outcome(action, "why")
    assert outcome.settle is EXPECTED[action]
    assert outcome.acknowledges is (EXPECTED[action] is Settle.ACK)
    assert Outcome(action).dead_letter_reason == action.value  # never empty
    assert outcome.dead_letter_reason == "why"


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (100, Action.DEAD),
        (199, Action.DEAD),
        (200, Action.DONE),
        (202, Action.DONE),
        (204, Action.DONE),
        (299, Action.DONE),
        (300, Action.DEAD),
        (302, Action.DEAD),
        (399, Action.DEAD),
        (400, Action.DEAD),
        (401, Action.DEAD),
        (403, Action.DEAD),
        (404, Action.DEAD),
        (407, Action.DEAD),
        (408, Action.RETRY),
        (409, Action.CONFLICT),
        (410, Action.DEAD),
        (413, Action.DEAD),
        (415, Action.DEAD),
        (428, Action.DEAD),
        (429, Action.RETRY),
        (430, Action.DEAD),
        (499, Action.DEAD),
        (500, Action.RETRY),
        (503, Action.RETRY),
        (599, Action.RETRY),
    ],
)
def test_http_status_table(status: int, action: Action) -> None:
    outcome = http_outcome(status, "detail")
    assert outcome.action is action
    assert retryable_status(status) is (action is Action.RETRY)
    if action is not Action.DONE:
        assert outcome.reason == f"HTTP {status}: detail"


def test_http_reason_names_what_answered() -> None:
    assert http_outcome(503, what="delete answered HTTP").reason == "delete answered HTTP 503"


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (ObjectSuperseded("gen 2 replaced gen 1"), Action.SUPERSEDED),
        (ObjectMissing("no such object"), Action.DEAD),
        (ObjectBusy("a newer generation is being stored"), Action.RETRY),
        (ObjectStoreError("bucket unreachable"), Action.RETRY),
        (OSError(5, "Input/output error"), Action.RETRY),
        (requests.ConnectionError("refused"), Action.RETRY),
        (requests.Timeout("read timed out"), Action.RETRY),
        (DeadlineExceeded("request deadline passed"), Action.RETRY),
        (TransportError("token endpoint unreachable"), Action.RETRY),
        (RefreshError("token refresh failed"), Action.RETRY),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.value,
)
def test_error_table(exc: BaseException, action: Action) -> None:
    outcome = error_outcome(exc, "STOW-RS")
    assert outcome.action is action
    assert str(exc) in outcome.reason
    if action is not Action.SUPERSEDED:
        assert outcome.reason.startswith("STOW-RS: ")


def test_an_error_outside_the_table_is_a_defect_and_propagates() -> None:
    with pytest.raises(KeyError):
        error_outcome(KeyError("bug"), "STOW-RS")


# Both queues follow the table: the embedded SQLite queue and the Pub/Sub handler.


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_the_embedded_queue_settles_by_the_table(tmp_path: Path, action: Action) -> None:
    queue = SqliteQueue(tmp_path / "queue.sqlite3", max_attempts=5)
    try:
        queue.publish(b"{}")
        [delivery] = queue.pull(1, 60.0)
        assert settle(queue, delivery, Outcome(action, "why"), Backoff(0.01, 0.01))
        stats = queue.stats()
        dead = queue.dead_letters()
        if EXPECTED[action] is Settle.ACK:
            assert (stats.pending, stats.retrying, stats.dead) == (0, 0, 0)
        elif EXPECTED[action] is Settle.RETRY:
            assert (stats.retrying, stats.dead) == (1, 0)
        else:
            assert [d.reason for d in dead] == ["why"]
    finally:
        queue.close()


class _Answers:
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def process(self, messages: list[object]) -> list[Outcome]:
        return [self.outcome for _ in messages]

    def finish(self, message: object, outcome: Outcome) -> None:
        """Nothing to clean up."""


@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_the_pubsub_handler_settles_by_the_table(action: Action) -> None:
    message = make_message()
    dead = RecordingPublisher()
    handler = PubSubHandler(_Answers(Outcome(action, "why")), dead)  # type: ignore[arg-type]
    handled = handler.handle(Received("7", encode(message), message.attributes, 1))
    expected = EXPECTED[action]
    if expected is Settle.ACK:
        assert (handled.decision, handled.result, dead.published) == (
            Decision.ACK,
            action.value,
            [],
        )
    elif expected is Settle.RETRY:
        assert (handled.decision, dead.published) == (Decision.NACK, [])
    else:
        assert (handled.decision, handled.result) == (Decision.ACK, "dead-lettered")
        assert len(dead.published) == 1
