"""The durable SQLite queue: leases, redelivery, retries, dead letters and durability."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.adapters.sqlite_queue import Delivery, SqliteQueue

TINY_LEASE = 0.05  # for leases that only need to expire
SHORT_LEASE = 0.25  # for leases whose invisibility is asserted right after the pull
LONG_LEASE = 60.0


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteQueue]:
    q = SqliteQueue(tmp_path / "queue.db", max_attempts=5)
    yield q
    q.close()


def pull_within(
    q: SqliteQueue, max_messages: int = 10, lease: float = LONG_LEASE, timeout: float = 5.0
) -> list[Delivery]:
    """Pull until something is delivered or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        got = q.pull(max_messages, lease)
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.005)


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


def test_max_attempts_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        SqliteQueue(tmp_path / "q.db", max_attempts=0)


def test_publish_pull_ack(queue: SqliteQueue) -> None:
    message_id = queue.publish(b"hello", {"a": "b"})
    [delivery] = queue.pull(10, LONG_LEASE)
    assert delivery.message_id == message_id
    assert delivery.body == b"hello"
    assert delivery.attempt == 1
    assert queue.ack(delivery) is True
    assert queue.pull(10, LONG_LEASE) == []
    assert queue.ack(delivery) is False  # already gone
    stats = queue.stats()
    assert (stats.pending, stats.in_flight, stats.retrying, stats.dead) == (0, 0, 0, 0)
    assert stats.oldest_pending_age is None


def test_publish_returns_distinct_ids(queue: SqliteQueue) -> None:
    ids = [queue.publish(f"m{n}".encode()) for n in range(5)]
    assert len(set(ids)) == 5


def test_pull_respects_max_messages_and_order(queue: SqliteQueue) -> None:
    bodies = [f"message-{n}".encode() for n in range(5)]
    for body in bodies:
        queue.publish(body)
    first = queue.pull(2, LONG_LEASE)
    assert [d.body for d in first] == bodies[:2]
    rest = queue.pull(10, LONG_LEASE)
    assert [d.body for d in rest] == bodies[2:]
    assert queue.pull(10, LONG_LEASE) == []


def test_leased_message_is_invisible_then_redelivered(queue: SqliteQueue) -> None:
    queue.publish(b"x")
    [first] = queue.pull(1, SHORT_LEASE)
    assert queue.pull(1, LONG_LEASE) == []
    assert queue.stats().in_flight == 1
    [second] = pull_within(queue, 1)
    assert second.message_id == first.message_id
    assert second.body == b"x"
    assert second.attempt == 2
    assert second.lease != first.lease
    assert queue.ack(first) is False  # the stale lease cannot settle the message
    assert queue.retry(first, 0, "stale") is False
    assert queue.dead_letter(first, "stale") is False
    assert queue.ack(second) is True


def test_retry_with_delay_hides_then_shows_again(queue: SqliteQueue) -> None:
    queue.publish(b"x")
    [first] = queue.pull(1, LONG_LEASE)
    assert queue.retry(first, SHORT_LEASE, "server busy") is True
    assert queue.pull(1, LONG_LEASE) == []
    stats = queue.stats()
    assert (stats.pending, stats.in_flight, stats.retrying) == (0, 0, 1)
    visible_in = queue.next_visible_in()
    assert visible_in is not None
    assert 0.0 <= visible_in <= SHORT_LEASE
    [second] = pull_within(queue, 1)
    assert second.attempt == 2
    assert queue.ack(second) is True
    assert queue.next_visible_in() is None


def test_retry_reason_is_recorded_for_the_dead_letter(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.db", max_attempts=2)
    try:
        q.publish(b"x")
        [first] = q.pull(1, LONG_LEASE)
        assert q.retry(first, 0, "HTTP 503: try later") is True
        [second] = pull_within(q, 1, lease=TINY_LEASE)
        assert second.attempt == 2
        # The second lease simply runs out; the next pull finds no attempts left.
        assert wait_for(lambda: q.pull(1, LONG_LEASE) == [] and q.stats().dead == 1)
        [dead] = q.dead_letters()
        assert dead.message_id == first.message_id
        assert dead.body == b"x"
        assert dead.attempts == 2
        assert "gave up after 2 delivery attempts" in dead.reason
        assert "HTTP 503: try later" in dead.reason
    finally:
        q.close()


def test_retry_after_max_attempts_dead_letters_with_last_reason(tmp_path: Path) -> None:
    q = SqliteQueue(tmp_path / "q.db", max_attempts=3)
    try:
        message_id = q.publish(b"x")
        for attempt in (1, 2, 3):
            [delivery] = pull_within(q, 1)
            assert delivery.attempt == attempt
            assert q.retry(delivery, 0, f"failure {attempt}") is True
        assert q.pull(10, LONG_LEASE) == []
        [dead] = q.dead_letters()
        assert dead.message_id == message_id
        assert dead.attempts == 3
        assert "failure 3" in dead.reason
        assert "failure 2" not in dead.reason
        stats = q.stats()
        assert (stats.pending, stats.in_flight, stats.retrying, stats.dead) == (0, 0, 0, 1)
    finally:
        q.close()


def test_dead_letter_directly(queue: SqliteQueue) -> None:
    message_id = queue.publish(b"poison")
    [delivery] = queue.pull(1, LONG_LEASE)
    assert queue.dead_letter(delivery, "undecodable message") is True
    assert queue.dead_letter(delivery, "again") is False
    assert queue.ack(delivery) is False
    [dead] = queue.dead_letters()
    assert (dead.message_id, dead.body, dead.attempts, dead.reason) == (
        message_id,
        b"poison",
        1,
        "undecodable message",
    )
    assert dead.failed_at > 0
    assert queue.pull(10, LONG_LEASE) == []


def _kill(queue: SqliteQueue, body: bytes) -> str:
    message_id = queue.publish(body)
    [delivery] = queue.pull(1, LONG_LEASE)
    assert delivery.message_id == message_id
    assert queue.dead_letter(delivery, f"killed {body!r}")
    return message_id


def test_requeue_all(queue: SqliteQueue) -> None:
    ids = [_kill(queue, b"a"), _kill(queue, b"b")]
    assert queue.stats().dead == 2
    assert queue.requeue() == 2
    assert queue.dead_letters() == []
    deliveries = queue.pull(10, LONG_LEASE)
    assert sorted(d.message_id for d in deliveries) == sorted(ids)
    assert {d.body for d in deliveries} == {b"a", b"b"}
    assert all(d.attempt == 1 for d in deliveries)
    assert queue.requeue() == 0


def test_requeue_selected_ids(queue: SqliteQueue) -> None:
    first = _kill(queue, b"a")
    second = _kill(queue, b"b")
    assert queue.requeue([second, "999999"]) == 1
    assert [d.message_id for d in queue.dead_letters()] == [first]
    [delivery] = queue.pull(10, LONG_LEASE)
    assert (delivery.message_id, delivery.body, delivery.attempt) == (second, b"b", 1)
    stats = queue.stats()
    assert (stats.in_flight, stats.dead) == (1, 1)


def test_delivery_from_before_a_requeue_is_stale(tmp_path: Path) -> None:
    """A lease is a fencing token: one handed out before a dead-letter/requeue cycle must not
    settle the delivery handed out after it."""
    q = SqliteQueue(tmp_path / "q.db", max_attempts=1)
    try:
        q.publish(b"x")
        [old] = q.pull(1, TINY_LEASE)
        # The slow holder of `old` loses its lease; the next pull dead-letters the message.
        assert wait_for(lambda: q.pull(1, LONG_LEASE) == [] and q.stats().dead == 1)
        assert q.requeue() == 1
        [new] = q.pull(1, LONG_LEASE)
        assert new.message_id == old.message_id
        assert q.dead_letter(old, "stale verdict") is False
        assert q.ack(new) is True
    finally:
        q.close()


def test_stats_counts_each_state(queue: SqliteQueue) -> None:
    for body in (b"a", b"b", b"c", b"d", b"e"):
        queue.publish(body)
    [in_flight] = queue.pull(1, LONG_LEASE)
    assert in_flight.body == b"a"
    [retrying] = queue.pull(1, LONG_LEASE)
    assert queue.retry(retrying, LONG_LEASE, "later")
    [dead] = queue.pull(1, LONG_LEASE)
    assert queue.dead_letter(dead, "bad")
    stats = queue.stats()
    assert (stats.pending, stats.in_flight, stats.retrying, stats.dead) == (2, 1, 1, 1)
    assert stats.oldest_pending_age is not None
    assert stats.oldest_pending_age >= 0.0


def test_retrying_lists_what_stats_count_with_the_last_reason(queue: SqliteQueue) -> None:
    for body in (b"a", b"b", b"c", b"d"):
        queue.publish(body)
    [in_flight] = queue.pull(1, LONG_LEASE)
    [first, second] = queue.pull(2, LONG_LEASE)
    before = time.time()
    assert queue.retry(first, LONG_LEASE, "store answered 503")
    assert queue.retry(second, LONG_LEASE, "connection refused")
    listed = queue.retrying()
    assert [(r.body, r.attempts, r.reason) for r in listed] == [
        (b"b", 1, "store answered 503"),
        (b"c", 1, "connection refused"),
    ]
    assert all(r.next_attempt_at >= before + LONG_LEASE for r in listed)
    assert len(listed) == queue.stats().retrying  # neither the pending nor the in-flight one
    assert [r.body for r in queue.retrying(limit=1)] == [b"b"]
    assert in_flight.body == b"a"


def test_expired_lease_counts_as_retrying(queue: SqliteQueue) -> None:
    queue.publish(b"x")
    queue.pull(1, TINY_LEASE)
    assert wait_for(lambda: queue.stats().in_flight == 0)
    stats = queue.stats()
    assert (stats.pending, stats.in_flight, stats.retrying) == (0, 0, 1)


def test_release_leases(queue: SqliteQueue) -> None:
    queue.publish(b"a")
    queue.publish(b"b")
    leased = queue.pull(10, LONG_LEASE)
    assert len(leased) == 2
    assert queue.pull(10, LONG_LEASE) == []
    assert queue.release_leases() == 2
    assert queue.release_leases() == 0
    again = queue.pull(10, LONG_LEASE)
    assert sorted(d.body for d in again) == [b"a", b"b"]
    assert all(d.attempt == 2 for d in again)
    assert queue.ack(leased[0]) is False


def test_committed_publishes_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = SqliteQueue(path)
    ids = [q.publish(f"m{n}".encode()) for n in range(3)]
    [leased] = q.pull(1, LONG_LEASE)
    q.close()

    reopened = SqliteQueue(path)
    try:
        stats = reopened.stats()
        assert (stats.pending, stats.in_flight) == (2, 1)
        assert reopened.release_leases() == 1
        deliveries = reopened.pull(10, LONG_LEASE)
        assert sorted((d.message_id, d.body, d.attempt) for d in deliveries) == [
            (leased.message_id, b"m0", 2),
            (ids[1], b"m1", 1),
            (ids[2], b"m2", 1),
        ]
    finally:
        reopened.close()


def test_dead_letters_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    q = SqliteQueue(path)
    message_id = _kill(q, b"z")
    q.close()
    reopened = SqliteQueue(path)
    try:
        assert [d.message_id for d in reopened.dead_letters()] == [message_id]
    finally:
        reopened.close()


def test_wait_returns_on_publish(queue: SqliteQueue) -> None:
    woke = threading.Event()

    def sleeper() -> None:
        queue.wait(10.0)
        woke.set()

    thread = threading.Thread(target=sleeper)
    thread.start()
    try:
        deadline = time.monotonic() + 5.0
        while not woke.is_set() and time.monotonic() < deadline:
            queue.publish(b"wake up")
            woke.wait(0.05)
        assert woke.is_set()
    finally:
        thread.join(10.0)


def test_concurrent_publishers_each_message_pulled_once(queue: SqliteQueue) -> None:
    threads_count, per_thread = 4, 200
    published: list[list[str]] = [[] for _ in range(threads_count)]
    errors: list[BaseException] = []

    def publisher(n: int) -> None:
        try:
            for i in range(per_thread):
                published[n].append(queue.publish(f"{n}:{i}".encode()))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60.0)
    assert not errors
    all_ids = [i for ids in published for i in ids]
    assert len(set(all_ids)) == threads_count * per_thread

    pulled: list[Delivery] = []
    lock = threading.Lock()

    def puller() -> None:
        while True:
            got = queue.pull(25, LONG_LEASE)
            if not got:
                return
            with lock:
                pulled.extend(got)

    pullers = [threading.Thread(target=puller) for _ in range(4)]
    for thread in pullers:
        thread.start()
    for thread in pullers:
        thread.join(60.0)

    assert len(pulled) == threads_count * per_thread
    assert sorted(d.message_id for d in pulled) == sorted(all_ids)
    assert {d.body for d in pulled} == {
        f"{n}:{i}".encode() for n in range(threads_count) for i in range(per_thread)
    }
    assert all(d.attempt == 1 for d in pulled)
    assert queue.stats().in_flight == threads_count * per_thread


def test_an_older_database_is_migrated_and_its_messages_recognised(tmp_path: Path) -> None:
    """A queue file from before object keys: columns are added and filled from the bodies."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, body BLOB NOT NULL,
            published REAL NOT NULL, visible_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            lease INTEGER NOT NULL DEFAULT 0, leased INTEGER NOT NULL DEFAULT 0, last_error TEXT);
        CREATE TABLE dead_letters (id INTEGER PRIMARY KEY, body BLOB NOT NULL,
            published REAL NOT NULL, failed_at REAL NOT NULL, attempts INTEGER NOT NULL,
            reason TEXT NOT NULL);
        """
    )
    live = json.dumps({"uri": "file:///s/objects/1/2/3.dcm", "generation": "7"})
    dead = json.dumps({"uri": "file:///s/objects/1/2/4.dcm", "generation": "8"})
    db.execute("INSERT INTO messages (body, published, visible_at) VALUES (?, 0, 0)", (live,))
    db.execute(
        "INSERT INTO dead_letters (id, body, published, failed_at, attempts, reason)"
        " VALUES (9, ?, 0, 0, 3, 'x')",
        (dead,),
    )
    db.commit()
    db.close()
    queue = SqliteQueue(path)
    assert queue.has_object("file:///s/objects/1/2/3.dcm#7")
    assert queue.has_object("file:///s/objects/1/2/4.dcm#8")
    assert not queue.has_object("file:///s/objects/1/2/5.dcm#9")
    assert queue.requeue() == 1  # the added lease column works too
    queue.close()


def test_the_ledger_of_held_versions_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    q = SqliteQueue(path)
    assert q.held_version("1.2.3") is None
    q.record_held("1.2.3", "AAAAAA==")
    q.record_held("1.2.3", "BBBBBB==")  # after an overwrite: the new version
    q.record_held("1.2.4", "CCCCCC==")
    q.close()
    q = SqliteQueue(path)
    try:
        held = q.held_version("1.2.3")
        assert held is not None and held.crc32c == "BBBBBB=="
        assert abs(held.recorded_at - time.time()) < 300
        other = q.held_version("1.2.4")
        assert other is not None and other.crc32c == "CCCCCC=="
    finally:
        q.close()


def test_a_database_from_before_the_ledger_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    q = SqliteQueue(path)
    q.publish(b"{}")
    q.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE held")
    q = SqliteQueue(path)
    try:
        assert q.held_version("1.2.3") is None
        q.record_held("1.2.3", "AAAAAA==")
        assert q.held_version("1.2.3") is not None
        assert q.stats().pending == 1
    finally:
        q.close()


def test_repoint_moves_messages_dead_letters_and_settled_records(queue: SqliteQueue) -> None:
    def body(uri: str) -> bytes:
        return json.dumps({"uri": uri}).encode()

    def attributes(uri: str, generation: str) -> dict[str, str]:
        return {"object_uri": uri, "object_generation": generation}

    old, new = "file:///old/objects/", "file:///new/objects/"
    queue.publish(body(old + "a.dcm"), attributes(old + "a.dcm", "1"))
    queue.publish(body(old + "b.dcm"), attributes(old + "b.dcm", "2"))
    queue.publish(b"not a message", attributes(old + "c.dcm", "3"))
    queue.publish(body(new + "d.dcm"), attributes(new + "d.dcm", "4"))
    [first] = pull_within(queue, 1)
    assert queue.dead_letter(first, "refused")  # a.dcm
    [second] = pull_within(queue, 1)
    assert queue.ack(second, remember=True)  # b.dcm: settled

    def rewrite(data: bytes, uri: str) -> bytes | None:
        try:
            return body(uri) if "uri" in json.loads(data) else None
        except ValueError:
            return None

    def new_uri(uri: str) -> str | None:
        return uri.replace(old, new) if uri.startswith(old) else None

    assert queue.repoint(new, new_uri, rewrite) == (1, 1)  # c.dcm's body is no message
    assert queue.has_object(new + "a.dcm#1") and not queue.has_object(old + "a.dcm#1")
    assert [json.loads(d.body)["uri"] for d in queue.dead_letters()] == [new + "a.dcm"]
    assert queue.has_object(new + "b.dcm#2") and not queue.has_object(old + "b.dcm#2")
    assert queue.has_object(old + "c.dcm#3") and queue.has_object(new + "d.dcm#4")
    assert queue.repoint(new, new_uri, rewrite) == (0, 0)
