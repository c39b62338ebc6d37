"""Replaying Pub/Sub backlogs: time parsing, the summary, the rate limit and ``drain``."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import termios
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core.exceptions import DeadlineExceeded
from support.fakes import RecordingPublisher

from dicom_ingest import replay
from dicom_ingest.progress import ProgressBar
from dicom_ingest.replay import (
    LEASE_SECONDS,
    RateLimit,
    Summary,
    describe,
    drain,
    parse_time,
    replay_attributes,
    republish_to,
)
from ingest.contracts.message import InstanceMessage, encode
from uploader.pubsub_handler import DEAD_LETTER_ATTRIBUTES, DEFERRED_ATTRIBUTE, Received

SUBSCRIPTION = "projects/p-123/subscriptions/dicom-dead-letters"


def make_message(sop: str = "1.2.3.4.5", size: int = 1234) -> InstanceMessage:
    return InstanceMessage(
        uri=f"gs://bucket/dicom/1.2.3/1.2.3.4/{sop}.dcm",
        generation="1718000000000000",
        size=size,
        crc32c="AAAAAA==",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=sop,
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="PACS",
        called_ae="IMPORTADAPTER",
        received_at="2024-06-10T12:00:00.000+00:00",
    )


# ---- parse_time ----


@pytest.mark.parametrize(
    ("text", "expected", "offset"),
    [
        ("2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10, tzinfo=UTC), timedelta(0)),
        ("2026-11-24T12:00:00+02:00", datetime(2026, 11, 24, 10, tzinfo=UTC), timedelta(hours=2)),
        ("2026-11-24T05:00:00-05:00", datetime(2026, 11, 24, 10, tzinfo=UTC), timedelta(hours=-5)),
        ("2026-11-24T10:00:00", datetime(2026, 11, 24, 10, tzinfo=UTC), timedelta(0)),
        ("  2026-11-24T10:00:00Z\n", datetime(2026, 11, 24, 10, tzinfo=UTC), timedelta(0)),
        ("2026-11-24", datetime(2026, 11, 24, tzinfo=UTC), timedelta(0)),
        (
            "2026-11-24T10:00:00.250Z",
            datetime(2026, 11, 24, 10, 0, 0, 250000, tzinfo=UTC),
            timedelta(0),
        ),
    ],
    ids=["zulu", "plus-offset", "minus-offset", "naive", "whitespace", "date", "fraction"],
)
def test_parse_time(text: str, expected: datetime, offset: timedelta) -> None:
    value = parse_time(text)
    assert value == expected
    assert value.utcoffset() == offset


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01T00:00:00Z", "24/11/2026 10:00"])
def test_parse_time_rejects_garbage_readably(text: str) -> None:
    with pytest.raises(ValueError, match="not a time") as caught:
        parse_time(text)
    assert repr(text) in str(caught.value)
    assert "2026-11-24T10:00:00Z" in str(caught.value)  # an example of what works


# ---- Summary ----


def test_summary_counts_and_line() -> None:
    summary = Summary()
    summary.count("done")
    summary.count("done")
    summary.count("skipped")
    summary.count("failed", "publish failed: Timeout")
    summary.count("failed", "publish failed: Timeout")
    summary.count("dead")
    assert (summary.done, summary.skipped, summary.failed, summary.total) == (2, 1, 3, 6)
    assert summary.reasons == {"publish failed: Timeout": 2, "dead": 1}
    assert summary.line() == "6 messages: 2 done, 3 failed, 1 skipped"


def test_summary_groups_long_reasons_by_their_start() -> None:
    summary = Summary()
    summary.count("failed", "x" * 120 + "first")
    summary.count("failed", "x" * 120 + "second")
    assert summary.reasons == {"x" * 120: 2}


def test_empty_summary() -> None:
    assert Summary().line() == "0 messages: 0 done, 0 failed, 0 skipped"
    assert Summary().reasons == {}


# ---- RateLimit ----


def scripted_clock(times: list[float]) -> Callable[[], float]:
    ticks: Iterator[float] = iter(times)
    return lambda: next(ticks)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(replay.time, "sleep", recorded.append)
    return recorded


def test_rate_limit_spaces_calls(sleeps: list[float]) -> None:
    # Built at 0; calls at 0, 0.1, 0.2 (the first two sleeps are not seen by the clock).
    limiter = RateLimit(2.0, clock=scripted_clock([0.0, 0.0, 0.1, 0.2]))
    limiter.wait()  # first call: no wait, next slot at 0.5
    limiter.wait()  # at 0.1: wait 0.4, next slot at 1.0
    limiter.wait()  # at 0.2: wait 0.8, next slot at 1.5
    assert sleeps == pytest.approx([0.4, 0.8])


def test_rate_limit_does_not_burst_after_idle(sleeps: list[float]) -> None:
    limiter = RateLimit(4.0, clock=scripted_clock([0.0, 0.0, 10.0, 10.1, 10.6]))
    limiter.wait()
    limiter.wait()  # at 10: long past the slot; no wait, next slot at 10.25
    limiter.wait()  # at 10.1: wait 0.15
    limiter.wait()  # at 10.6: past 10.5; no wait
    assert sleeps == pytest.approx([0.15])


@pytest.mark.parametrize("per_second", [0.0, -1.0])
def test_rate_limit_off(sleeps: list[float], per_second: float) -> None:
    calls: list[int] = []

    def clock() -> float:
        calls.append(1)
        return 0.0

    limiter = RateLimit(per_second, clock=clock)
    for _ in range(5):
        limiter.wait()
    assert sleeps == []
    assert len(calls) == 1  # only the constructor reads the clock


# ---- replay_attributes and describe ----


def test_replay_attributes_strips_exactly_the_dead_letter_attributes() -> None:
    kept = {
        **make_message().attributes,
        DEFERRED_ATTRIBUTE: "99",
        "dead_letter_reason_note": "lookalike",
        "CloudPubSubOther": "x",
    }
    added = {name: "added" for name in DEAD_LETTER_ATTRIBUTES}
    assert "dead_letter_reason" in added
    assert "CloudPubSubDeadLetterSourceDeliveryCount" in added
    original = {**kept, **added}
    assert replay_attributes(original) == kept
    assert len(original) == len(kept) + len(added)  # the argument is not changed


def test_describe() -> None:
    received = Received("42", encode(make_message(size=77)), {"dead_letter_reason": "HTTP 400"})
    assert describe(received) == "42  sop=1.2.3.4.5 size=77  reason: HTTP 400"
    bad = describe(Received("43", b"junk", {}))
    assert bad.startswith("43  undecodable (")
    assert "reason" not in bad


def test_republish_strips_dead_letter_attributes() -> None:
    publisher = RecordingPublisher()
    act = republish_to(publisher)
    result = act(Received("7", b"body", {"a": "1", "dead_letter_reason": "old"}))
    assert result == (True, "done", "")
    assert publisher.published == [(b"body", {"a": "1"})]


def test_republish_failure_is_not_acknowledged() -> None:
    publisher = RecordingPublisher(error=TimeoutError("no answer"))
    acknowledge, result, reason = republish_to(publisher)(Received("7", b"b", {}))
    assert (acknowledge, result) == (False, "failed")
    assert reason == "publish failed: TimeoutError: no answer"


# ---- drain ----


def pulled(message_id: str, ack_id: str | None = None, attempt: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        ack_id=ack_id or f"ack-{message_id}",
        delivery_attempt=attempt,
        message=SimpleNamespace(
            message_id=message_id,
            data=encode(make_message()),
            attributes={"id": message_id},
        ),
    )


@dataclass
class FakeSubscriber:
    """Answers each pull with the next scripted batch (at most ``max_messages``), then nothing."""

    batches: list[list[SimpleNamespace]]
    pulls: list[dict[str, Any]] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    deadlines: list[tuple[list[str], int]] = field(default_factory=list)

    def pull(self, request: dict[str, Any], timeout: float) -> SimpleNamespace:
        assert request["subscription"] == SUBSCRIPTION
        self.pulls.append(request)
        batch = self.batches.pop(0) if self.batches else []
        return SimpleNamespace(received_messages=batch[: request["max_messages"]])

    def acknowledge(self, request: dict[str, Any]) -> None:
        assert request["subscription"] == SUBSCRIPTION
        self.acked.extend(request["ack_ids"])

    def modify_ack_deadline(self, request: dict[str, Any]) -> None:
        assert request["subscription"] == SUBSCRIPTION
        self.deadlines.append((list(request["ack_ids"]), request["ack_deadline_seconds"]))

    @property
    def released(self) -> list[str]:
        return [ack_id for ids, seconds in self.deadlines if seconds == 0 for ack_id in ids]

    @property
    def leased(self) -> list[str]:
        return [ack_id for ids, seconds in self.deadlines if seconds > 0 for ack_id in ids]


@dataclass
class RecordingAction:
    """Acknowledges every message except those named in ``fail``; raises on ``explode``."""

    fail: frozenset[str] = frozenset()
    explode: frozenset[str] = frozenset()
    seen: list[Received] = field(default_factory=list)

    def __call__(self, received: Received) -> tuple[bool, str, str]:
        self.seen.append(received)
        if received.message_id in self.explode:
            raise RuntimeError("interrupted")
        if received.message_id in self.fail:
            return False, "failed", "publish failed: Timeout"
        return True, "done", ""

    @property
    def ids(self) -> list[str]:
        return [r.message_id for r in self.seen]


def test_drain_acks_settled_messages_and_releases_the_others() -> None:
    subscriber = FakeSubscriber([[pulled("a", attempt=5), pulled("b"), pulled("c")]])
    action = RecordingAction(fail=frozenset({"b"}))
    summary = drain(subscriber, SUBSCRIPTION, action, out=io.StringIO())
    assert action.ids == ["a", "b", "c"]
    assert action.seen[0] == Received("a", encode(make_message()), {"id": "a"}, 5)
    assert action.seen[1].delivery_attempt is None  # 0 means "not known"
    assert subscriber.acked == ["ack-a", "ack-c"]
    assert subscriber.deadlines[0] == (["ack-a", "ack-b", "ack-c"], LEASE_SECONDS)
    assert subscriber.released == ["ack-b"]
    assert subscriber.deadlines[-1] == (["ack-b"], 0)
    assert (summary.done, summary.failed, summary.skipped) == (2, 1, 0)
    assert summary.reasons == {"publish failed: Timeout": 1}


def test_dry_run_acknowledges_nothing_and_releases_everything() -> None:
    subscriber = FakeSubscriber([[pulled("a"), pulled("b")], [pulled("c")]])
    out = io.StringIO()
    summary = drain(subscriber, SUBSCRIPTION, None, out=out)
    assert subscriber.acked == []
    assert subscriber.released == ["ack-a", "ack-b", "ack-c"]
    assert summary.skipped == 3
    assert summary.total == 3
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["a", "b", "c"]
    assert all("sop=1.2.3.4.5" in line for line in lines)


def test_duplicate_of_an_acknowledged_message_is_acked_again_not_reprocessed() -> None:
    subscriber = FakeSubscriber(
        [
            [pulled("a"), pulled("b")],
            [pulled("a", ack_id="ack-a-again"), pulled("b", ack_id="ack-b-again"), pulled("c")],
        ]
    )
    action = RecordingAction(fail=frozenset({"b"}))
    summary = drain(subscriber, SUBSCRIPTION, action, out=io.StringIO())
    assert action.ids == ["a", "b", "c"]
    assert subscriber.acked == ["ack-a", "ack-a-again", "ack-c"]
    assert sorted(subscriber.released) == ["ack-b", "ack-b-again"]
    assert summary.total == 3


def test_drain_stops_after_two_pulls_in_a_row_bring_nothing_new() -> None:
    subscriber = FakeSubscriber([[pulled("a")], [pulled("a", ack_id="ack-a-again")], []])
    action = RecordingAction()
    drain(subscriber, SUBSCRIPTION, action, out=io.StringIO())
    assert len(subscriber.pulls) == 3
    assert action.ids == ["a"]
    assert subscriber.acked == ["ack-a", "ack-a-again"]


def test_one_empty_pull_does_not_end_the_drain() -> None:
    """Pub/Sub may answer a pull with nothing while messages remain."""
    subscriber = FakeSubscriber([[pulled("a")], [], [pulled("b")]])
    action = RecordingAction()
    summary = drain(subscriber, SUBSCRIPTION, action, out=io.StringIO())
    assert action.ids == ["a", "b"]
    assert summary.total == 2


def test_a_pull_that_times_out_counts_as_empty() -> None:
    class TimingOut(FakeSubscriber):
        def pull(self, request: dict[str, Any], timeout: float) -> Any:
            self.pulls.append(request)
            raise DeadlineExceeded("no messages")

    subscriber = TimingOut([])
    summary = drain(subscriber, SUBSCRIPTION, RecordingAction(), out=io.StringIO())
    assert summary.total == 0
    assert len(subscriber.pulls) == 2


def test_drain_of_an_empty_subscription() -> None:
    subscriber = FakeSubscriber([])
    summary = drain(subscriber, SUBSCRIPTION, RecordingAction(), out=io.StringIO())
    assert summary.total == 0
    assert len(subscriber.pulls) == 2
    assert subscriber.acked == []
    assert subscriber.deadlines == []


def test_drain_honours_the_limit() -> None:
    subscriber = FakeSubscriber(
        [[pulled(x) for x in "abc"], [pulled(x) for x in "defg"], [pulled("h")]]
    )
    action = RecordingAction()
    summary = drain(subscriber, SUBSCRIPTION, action, limit=5, out=io.StringIO())
    assert [p["max_messages"] for p in subscriber.pulls] == [5, 2]
    assert action.ids == ["a", "b", "c", "d", "e"]
    assert summary.total == 5
    assert "ack-f" not in subscriber.leased  # never taken, so never held


def test_drain_without_limit_pulls_full_batches() -> None:
    subscriber = FakeSubscriber([[pulled("a")]])
    drain(subscriber, SUBSCRIPTION, RecordingAction(), out=io.StringIO())
    assert subscriber.pulls[0]["max_messages"] == replay.PULL_BATCH


def test_release_is_sent_in_chunks() -> None:
    ids = [f"m{i}" for i in range(1500)]
    batches = [
        [pulled(x) for x in ids[start : start + replay.PULL_BATCH]]
        for start in range(0, len(ids), replay.PULL_BATCH)
    ]
    subscriber = FakeSubscriber(batches)
    drain(subscriber, SUBSCRIPTION, None, out=io.StringIO())
    releases = [ack_ids for ack_ids, seconds in subscriber.deadlines if seconds == 0]
    assert [len(chunk) for chunk in releases] == [1000, 500]
    assert subscriber.released == [f"ack-{x}" for x in ids]


def test_interrupted_drain_releases_what_it_leased_but_did_not_settle() -> None:
    # An error (or Ctrl-C) part-way through a pulled batch: the messages of that batch not yet
    # acknowledged must go back to the subscription now, not after the ten-minute lease.
    subscriber = FakeSubscriber([[pulled("a"), pulled("b"), pulled("c"), pulled("d")]])
    action = RecordingAction(fail=frozenset({"a"}), explode=frozenset({"c"}))
    with pytest.raises(RuntimeError, match="interrupted"):
        drain(subscriber, SUBSCRIPTION, action, out=io.StringIO())
    assert subscriber.acked == ["ack-b"]
    assert sorted(subscriber.released) == ["ack-a", "ack-c", "ack-d"]


# ---- progress ----


def test_drain_draws_a_progress_bar_on_a_terminal() -> None:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    with os.fdopen(terminal, "w", encoding="utf-8") as stream:
        progress = ProgressBar("replay drain", "messages", 3, stream=stream)
        subscriber = FakeSubscriber([[pulled("a"), pulled("b"), pulled("c")]])
        drain(
            subscriber,
            SUBSCRIPTION,
            RecordingAction(fail=frozenset({"b"})),
            out=io.StringIO(),
            progress=progress,
        )
        stream.flush()
        shown = b""
        while select.select([controller], [], [], 0)[0]:
            shown += os.read(controller, 65536)
    os.close(controller)
    text = shown.decode()
    assert re.search(
        r"replay drain: 100%\|[^|]+\| 3/3 \[[\d:]+<[\d:]+, +[\d.]+ messages/s,"
        r" done=2, failed=1, skipped=0\]",
        text,
    ), text


def test_drain_draws_nothing_when_not_on_a_terminal() -> None:
    stream = io.StringIO()
    summary = drain(
        FakeSubscriber([[pulled("a")]]),
        SUBSCRIPTION,
        RecordingAction(),
        out=io.StringIO(),
        progress=ProgressBar("replay drain", "messages", stream=stream),
    )
    assert summary.done == 1
    assert stream.getvalue() == ""
