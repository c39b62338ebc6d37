"""The queue's embedded adapter: a durable SQLite queue.

Semantics follow Pub/Sub pull subscriptions: at-least-once delivery, a lease (visibility
timeout) per delivery, a delivery-attempt count, and a dead-letter table after
``max_attempts``. A committed ``publish`` survives ``kill -9``; with ``durable_commits`` it
also survives power loss (WAL with ``synchronous=FULL``: an fsync per commit). Without it
(``synchronous=NORMAL``) the last commits before a power loss may roll back: right for a
queue whose messages can be rebuilt from what they point at, as the spool's are (every
object without a message is enqueued again at start-up), at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ingest.contracts.ports import HeldVersion

from .disk_reserve import DiskReserve
from .private_files import PRIVATE_FILE, open_lock_file, tighten_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    body        BLOB    NOT NULL,
    published   REAL    NOT NULL,
    visible_at  REAL    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease       INTEGER NOT NULL DEFAULT 0,
    leased      INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    object_key  TEXT
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY,
    body        BLOB    NOT NULL,
    published   REAL    NOT NULL,
    failed_at   REAL    NOT NULL,
    attempts    INTEGER NOT NULL,
    lease       INTEGER NOT NULL DEFAULT 0,
    reason      TEXT    NOT NULL,
    object_key  TEXT
);
"""
# The tables' ``object_key`` columns hold ``version_key``s (their name predates it).
QUEUE_FILE = "queue.sqlite3"  # in the spool directory; the pipeline and the CLI share it

# Columns added after the first release of the schema: (table, column, declaration).
_ADDED_COLUMNS = (
    ("messages", "object_key", "TEXT"),
    ("dead_letters", "lease", "INTEGER NOT NULL DEFAULT 0"),
    ("dead_letters", "object_key", "TEXT"),
)
_INDEXES = """
CREATE TABLE IF NOT EXISTS settled (
    object_key  TEXT PRIMARY KEY,
    settled_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_object ON messages (object_key);
CREATE INDEX IF NOT EXISTS dead_letters_object ON dead_letters (object_key);
CREATE TABLE IF NOT EXISTS held (
    sop_instance_uid TEXT PRIMARY KEY,
    crc32c           TEXT NOT NULL,
    recorded_at      REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rebuilds (
    rebuilt_at   REAL NOT NULL,
    damaged_file TEXT NOT NULL,
    reason       TEXT NOT NULL
);
"""
# SQLite's primary result codes that mean the file itself is damaged (not busy, not full).
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26
_DAMAGED_SUFFIX = ".damaged-"

T = TypeVar("T")


def version_key(attributes: dict[str, str]) -> str | None:
    """The object version a message points at, from its attributes (for reconciliation)."""
    uri, generation = attributes.get("object_uri"), attributes.get("object_generation")
    return f"{uri}#{generation}" if uri and generation else None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One leased delivery of a message."""

    message_id: str
    body: bytes
    attempt: int
    lease: int
    last_error: str | None = None  # why the previous attempt failed; None on a first one


@dataclass(frozen=True, slots=True)
class DeadLetter:
    message_id: str
    body: bytes
    attempts: int
    reason: str
    failed_at: float


@dataclass(frozen=True, slots=True)
class Retrying:
    """A message waiting for its next attempt, with the reason the last one failed."""

    message_id: str
    body: bytes
    attempts: int
    reason: str
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Rebuild:
    """A queue database found damaged at start, kept aside, and replaced by a new one."""

    rebuilt_at: float
    damaged_file: str
    reason: str


class QueueDamaged(Exception):
    """The queue database cannot be used as it is: it does not open, or fails its check."""


def is_damage(exc: sqlite3.Error) -> bool:
    """Whether an SQLite error says the file is damaged, rather than busy, full or unwritable.

    A locked database belongs to another process and a full disk to the operator; moving the
    file aside would help neither.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return False
    return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def is_disk_full(exc: sqlite3.Error) -> bool:
    """Whether an SQLite error is "database or disk is full"."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_FULL


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename a damaged database, with its -wal and -shm files, to ``NAME.damaged-STAMP``.

    The stamp is the UTC time, ``YYYYmmddTHHMMSSZ``; a second rename in the same second gets
    a counter after it. The kept files stay 0600. Returns the new path of the database.
    """
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    base = f"{path.name}{_DAMAGED_SUFFIX}{stamp.strftime('%Y%m%dT%H%M%SZ')}"
    target = path.with_name(base)
    counter = 1
    while any(target.with_name(target.name + p).exists() for p in ("", "-wal", "-shm")):
        counter += 1
        target = path.with_name(f"{base}.{counter}")
    for part in ("", "-wal", "-shm"):
        source = path.with_name(path.name + part)
        if source.exists():
            kept = target.with_name(target.name + part)
            source.rename(kept)
            tighten_file(kept)
    return target


@dataclass(frozen=True, slots=True)
class QueueStats:
    pending: int
    in_flight: int
    retrying: int
    dead: int
    oldest_pending_age: float | None


class SqliteQueue:
    """A durable queue in one SQLite file, shared by threads of one process.

    Several processes may open the same file (the CLI does, for status and requeue); SQLite
    serialises writers.
    """

    def __init__(
        self,
        path: Path,
        max_attempts: int = 10,
        *,
        durable_commits: bool = True,
        on_dead_letter: Callable[[DeadLetter], None] | None = None,
        reserve: DiskReserve | None = None,
    ) -> None:
        """``on_dead_letter`` hears of each message this queue dead-letters, once committed.
        ``reserve``: room kept on the disk for settling deliveries when it is full (see
        ``disk_reserve``); allocated here when the disk has room for it."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._max_attempts = max_attempts
        self._on_dead_letter = on_dead_letter
        self._reserve = reserve
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        # Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files it creates
        # the database file's mode, so all three are private whatever the umask.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE))
        self._writers = open_lock_file(path.with_suffix(".lock"), self)
        self._db = sqlite3.connect(
            path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            for part in ("", "-wal", "-shm"):  # left open by an earlier release
                tighten_file(path.with_name(path.name + part))
            self._db.execute(f"PRAGMA synchronous={'FULL' if durable_commits else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._db.executescript(_INDEXES)
        except sqlite3.Error as exc:
            self._db.close()
            if is_damage(exc):
                raise QueueDamaged(str(exc)) from exc
            raise
        self._closed = False
        if reserve is not None:
            reserve.restore(force=True)

    def quick_check(self) -> str | None:
        """None when ``PRAGMA quick_check`` finds the database sound, else its first finding.

        The findings name pages, tables and indexes, never the rows' content.
        """
        try:
            with self._lock:
                rows = self._db.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.Error as exc:
            if is_damage(exc):
                return str(exc)
            raise
        finding = " ".join(" ".join(str(row[0]) for row in rows).split())  # one line
        return None if finding == "ok" else finding[:300]

    def record_rebuild(self, damaged_file: str, reason: str) -> None:
        """Remember, in this (new) database, that it replaced a damaged one."""
        with self._lock, self._transaction() as db:
            db.execute(
                "INSERT INTO rebuilds (rebuilt_at, damaged_file, reason) VALUES (?, ?, ?)",
                (time.time(), damaged_file, reason[:300]),
            )

    def rebuilds(self) -> list[Rebuild]:
        """The damaged databases this one replaced, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT rebuilt_at, damaged_file, reason FROM rebuilds ORDER BY rebuilt_at"
            ).fetchall()
        return [Rebuild(float(r[0]), str(r[1]), str(r[2])) for r in rows]

    def _migrate(self) -> None:
        for table, column, declaration in _ADDED_COLUMNS:
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                if column == "object_key":
                    # Fill it from the message bodies, so reconciliation recognises them.
                    fill = (  # table names come from _ADDED_COLUMNS, not from input
                        f"UPDATE {table} SET object_key ="  # noqa: S608
                        " json_extract(body, '$.uri') || '#' || json_extract(body, '$.generation')"
                        " WHERE object_key IS NULL AND json_valid(body)"
                    )
                    self._db.execute(fill)

    @property
    def max_attempts(self) -> int:
        return self._max_attempts

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # Writers in other processes (receive processes, the CLI) queue on the lock file in
        # the kernel, woken the moment it is free; SQLite's own wait for its write lock
        # polls, sleeping a millisecond and more between tries.
        fcntl.flock(self._writers, fcntl.LOCK_EX)
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (a full disk) may leave the transaction open, or SQLite may
                # have rolled it back already: either way none is open after this.
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                raise
        finally:
            fcntl.flock(self._writers, fcntl.LOCK_UN)

    def _settling(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run a transaction that settles deliveries, and so lets space be freed.

        On a full disk the queue's reserve is given up and the transaction run once more:
        the uploads it settles are what removes objects from the spool.
        """
        with self._lock:
            try:
                with self._transaction() as db:
                    result = work(db)
            except sqlite3.OperationalError as exc:
                if not (is_disk_full(exc) and self._reserve and self._reserve.release()):
                    raise
                with self._transaction() as db:
                    result = work(db)
            if self._reserve is not None:
                self._reserve.restore()
            return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wakeup.notify_all()
            self._db.close()

    def release_leases(self) -> int:
        """Make every message visible now: leased ones and those waiting out a retry delay.

        For the process that owns the queue at start-up: a restart usually follows a fix (a
        corrected address, a store back online), so waiting out old delays helps nobody.
        """
        now = time.time()
        return self._settling(
            lambda db: (
                db.execute(
                    "UPDATE messages SET visible_at = ?, leased = 0"
                    " WHERE leased = 1 OR visible_at > ?",
                    (now, now),
                ).rowcount
            )
        )

    def publish(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        now = time.time()
        key = version_key(attributes or {})
        with self._lock, self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO messages (body, published, visible_at, object_key)"
                " VALUES (?, ?, ?, ?)",
                (body, now, now, key),
            )
            message_id = str(cursor.lastrowid)
            # One message wants one worker: waking them all would send every idle worker
            # into a pull that finds nothing (a busy worker pulls again when it is done).
            self._wakeup.notify()
        return message_id

    def pull(self, max_messages: int, lease_seconds: float, at_least: int = 1) -> list[Delivery]:
        """Lease up to max_messages visible messages, or none when fewer than ``at_least``
        are visible; messages past max_attempts dead-letter."""
        now = time.time()
        dead: list[DeadLetter] = []

        def lease(db: sqlite3.Connection) -> list[Delivery]:
            dead.clear()  # a transaction run again after the reserve was given up
            deliveries: list[Delivery] = []
            rows = db.execute(
                "SELECT id, body, attempts, lease, last_error FROM messages"
                " WHERE visible_at <= ? ORDER BY visible_at, id LIMIT ?",
                (now, max_messages),
            ).fetchall()
            if len(rows) < at_least:
                return deliveries
            for message_id, body, attempts, count, last_error in rows:
                if attempts >= self._max_attempts:
                    reason = f"gave up after {attempts} delivery attempts"
                    if last_error:
                        reason += f"; last error: {last_error}"
                    dead.append(self._move_to_dead(db, message_id, reason, now))
                    continue
                db.execute(
                    "UPDATE messages SET attempts = ?, lease = ?, leased = 1, visible_at = ?"
                    " WHERE id = ?",
                    (attempts + 1, count + 1, now + lease_seconds, message_id),
                )
                deliveries.append(
                    Delivery(str(message_id), bytes(body), attempts + 1, count + 1, last_error)
                )
            return deliveries

        deliveries = self._settling(lease)
        self._report(dead)
        return deliveries

    def wait(self, timeout: float, at_least: int = 1) -> None:
        """Block until ``at_least`` messages may be pulled: return at once when they are
        visible, else wait for a publish, the next message's visibility, or ``timeout``,
        whichever is first. The look and the wait are one step under the lock, so a publish
        in between is never missed."""
        with self._lock:
            if self._closed:
                return
            now = time.time()
            visible, upcoming = self._db.execute(
                "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE visible_at <= ?"
                " LIMIT ?)), (SELECT MIN(visible_at) FROM messages WHERE visible_at > ?)",
                (now, at_least, now),
            ).fetchone()
            if visible >= at_least:
                return
            if upcoming is not None:
                timeout = min(timeout, float(upcoming) - now)
            self._wakeup.wait(timeout)

    def has_object(self, key: str) -> bool:
        """Whether a message (live, dead-lettered or settled) points at this object version."""
        with self._lock:
            row = self._db.execute(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE object_key = ?)"
                " OR EXISTS (SELECT 1 FROM dead_letters WHERE object_key = ?)"
                " OR EXISTS (SELECT 1 FROM settled WHERE object_key = ?)",
                (key, key, key),
            ).fetchone()
        return bool(row[0])

    def held_version(self, sop_instance_uid: str) -> HeldVersion | None:
        """The ledger of delivered versions (``StoreLedger``): what the store holds."""
        with self._lock:
            row = self._db.execute(
                "SELECT crc32c, recorded_at FROM held WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
        return None if row is None else HeldVersion(str(row[0]), float(row[1]))

    def record_held(self, sop_instance_uid: str, crc32c: str) -> None:
        # Part of settling an upload: it may use the reserve, like the acknowledgement after it.
        now = time.time()
        self._settling(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO held (sop_instance_uid, crc32c, recorded_at)"
                " VALUES (?, ?, ?)",
                (sop_instance_uid, crc32c, now),
            )
        )

    def repoint(
        self,
        prefix: str,
        new_uri: Callable[[str], str | None],
        rewrite: Callable[[bytes, str], bytes | None],
    ) -> tuple[int, int]:
        """Point messages, dead letters and settled records at objects that moved.

        Those whose object URI does not start with ``prefix`` (where objects are now) are
        offered to ``new_uri``, which maps a URI to where its object is now (None: nowhere
        else). A message's body is rewritten by ``rewrite(body, uri)``; one it cannot rewrite
        (None) is left as it is. One transaction; returns how many messages and dead letters,
        and how many settled records, now point anew. Where every URI starts with ``prefix``,
        one scan finds nothing.
        """

        def moved(key: str) -> tuple[str, str] | None:
            uri, hash_, generation = key.rpartition("#")
            target = new_uri(uri) if hash_ else None
            return None if target is None else (target, f"{target}#{generation}")

        def outside(db: sqlite3.Connection, table: str, column: str) -> Iterator[tuple[Any, str]]:
            """The rows whose object is outside ``prefix``, a thousand at a time (a moved
            spool may queue a large backlog), in ``column`` order."""
            query = (
                f"SELECT {column}, object_key FROM {table}"  # noqa: S608 - names are ours
                f" WHERE substr(object_key, 1, ?) != ? AND {column} > ? ORDER BY {column}"
                " LIMIT 1000"
            )
            after: Any = -1 if column == "id" else ""
            while rows := db.execute(query, (len(prefix), prefix, after)).fetchall():
                for row in rows:
                    yield row[0], str(row[1])
                after = rows[-1][0]

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            changed = settled = 0
            for table in ("messages", "dead_letters"):
                for row_id, key in outside(db, table, "id"):
                    target = moved(key)
                    if target is None:
                        continue
                    select = f"SELECT body FROM {table} WHERE id = ?"  # noqa: S608
                    (body,) = db.execute(select, (row_id,)).fetchone()
                    new_body = rewrite(bytes(body), target[0])
                    if new_body is None:
                        continue
                    db.execute(
                        f"UPDATE {table} SET body = ?, object_key = ? WHERE id = ?",  # noqa: S608
                        (new_body, target[1], row_id),
                    )
                    changed += 1
            for _, key in outside(db, "settled", "object_key"):
                target = moved(key)
                if target is not None:
                    db.execute(
                        "UPDATE OR REPLACE settled SET object_key = ? WHERE object_key = ?",
                        (target[1], key),
                    )
                    settled += 1
            return changed, settled

        return self._settling(work)

    def wake_one(self) -> None:
        """Wake one thread blocked in ``wait``: another process has published a message."""
        with self._lock:
            self._wakeup.notify()

    def wake(self) -> None:
        """Wake every thread blocked in ``wait``."""
        with self._lock:
            self._wakeup.notify_all()

    def next_visible_in(self) -> float | None:
        """Seconds until the next message becomes visible, or None when the queue is empty."""
        with self._lock:
            row = self._db.execute("SELECT MIN(visible_at) FROM messages").fetchone()
        if row is None or row[0] is None:
            return None
        return max(0.0, float(row[0]) - time.time())

    def ack(self, delivery: Delivery, remember: bool = False) -> bool:
        """Remove the message; False when the lease was lost (another delivery holds it).

        With remember, its object version is recorded as settled, so reconciliation does not
        enqueue it again while the object stays in the spool (``--keep_uploaded``).
        """

        def remove(db: sqlite3.Connection) -> bool:
            if remember:
                db.execute(
                    "INSERT OR IGNORE INTO settled (object_key, settled_at)"
                    " SELECT object_key, ? FROM messages"
                    " WHERE id = ? AND lease = ? AND object_key IS NOT NULL",
                    (time.time(), int(delivery.message_id), delivery.lease),
                )
            cursor = db.execute(
                "DELETE FROM messages WHERE id = ? AND lease = ?",
                (int(delivery.message_id), delivery.lease),
            )
            return cursor.rowcount == 1

        return self._settling(remove)

    def retry(self, delivery: Delivery, delay: float, reason: str) -> bool:
        """Make the message visible again after delay; dead-letter it once attempts run out."""
        now = time.time()
        dead: list[DeadLetter] = []

        def postpone(db: sqlite3.Connection) -> bool:
            dead.clear()
            row = db.execute(
                "SELECT attempts FROM messages WHERE id = ? AND lease = ?",
                (int(delivery.message_id), delivery.lease),
            ).fetchone()
            if row is None:
                return False
            if row[0] >= self._max_attempts:
                last = f"gave up after {row[0]} delivery attempts; last error: {reason}"
                dead.append(self._move_to_dead(db, int(delivery.message_id), last, now))
            else:
                db.execute(
                    "UPDATE messages SET visible_at = ?, leased = 0, last_error = ? WHERE id = ?",
                    (now + delay, reason, int(delivery.message_id)),
                )
            self._wakeup.notify_all()
            return True

        settled = self._settling(postpone)
        self._report(dead)
        return settled

    def extend(self, delivery: Delivery, lease_seconds: float) -> bool:
        """Push the lease's end out while the delivery is still being worked on."""
        until = time.time() + lease_seconds
        return self._settling(
            lambda db: (
                db.execute(
                    "UPDATE messages SET visible_at = ? WHERE id = ? AND lease = ? AND leased = 1",
                    (until, int(delivery.message_id), delivery.lease),
                ).rowcount
                == 1
            )
        )

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        dead: list[DeadLetter] = []

        def move(db: sqlite3.Connection) -> bool:
            dead.clear()
            row = db.execute(
                "SELECT 1 FROM messages WHERE id = ? AND lease = ?",
                (int(delivery.message_id), delivery.lease),
            ).fetchone()
            if row is None:
                return False
            dead.append(self._move_to_dead(db, int(delivery.message_id), reason, time.time()))
            return True

        settled = self._settling(move)
        self._report(dead)
        return settled

    def _report(self, dead: list[DeadLetter]) -> None:
        if self._on_dead_letter is not None:
            for letter in dead:
                self._on_dead_letter(letter)

    @staticmethod
    def _move_to_dead(
        db: sqlite3.Connection, message_id: int, reason: str, now: float
    ) -> DeadLetter:
        body, attempts = db.execute(
            "SELECT body, attempts FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
        db.execute(
            "INSERT OR REPLACE INTO dead_letters"
            " (id, body, published, failed_at, attempts, lease, reason, object_key)"
            " SELECT id, body, published, ?, attempts, lease, ?, object_key"
            " FROM messages WHERE id = ?",
            (now, reason, message_id),
        )
        db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        return DeadLetter(str(message_id), bytes(body), int(attempts), reason, now)

    def retry_reasons(self) -> dict[str, int]:
        """How many messages wait for another attempt, by the reason their last one failed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT last_error, COUNT(*) FROM messages"
                " WHERE attempts > 0 AND last_error IS NOT NULL GROUP BY last_error"
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def stats(self) -> QueueStats:
        now = time.time()
        with self._lock:
            pending, in_flight, retrying, oldest = self._db.execute(
                "SELECT"
                " COALESCE(SUM(leased = 0 AND attempts = 0), 0),"
                " COALESCE(SUM(leased = 1 AND visible_at > ?), 0),"
                " COALESCE(SUM(attempts > 0 AND NOT (leased = 1 AND visible_at > ?)), 0),"
                " MIN(published)"
                " FROM messages",
                (now, now),
            ).fetchone()
            (dead,) = self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        age = None if oldest is None else max(0.0, now - float(oldest))
        return QueueStats(int(pending), int(in_flight), int(retrying), int(dead), age)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body, attempts, reason, failed_at FROM dead_letters"
                " ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [DeadLetter(str(r[0]), bytes(r[1]), int(r[2]), str(r[3]), float(r[4])) for r in rows]

    def retrying(self, limit: int = 100) -> list[Retrying]:
        """Messages whose last attempt failed and that wait for the next, oldest first."""
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT id, body, attempts, COALESCE(last_error, ''), visible_at FROM messages"
                " WHERE attempts > 0 AND NOT (leased = 1 AND visible_at > ?)"
                " ORDER BY id LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Retrying(str(r[0]), bytes(r[1]), int(r[2]), str(r[3]), float(r[4])) for r in rows]

    def requeue(self, message_ids: Iterable[str] | None = None) -> int:
        """Move dead letters (all, or the given ids) back to the queue with fresh attempts."""
        now = time.time()
        with self._lock, self._transaction() as db:
            if message_ids is None:
                ids = [r[0] for r in db.execute("SELECT id FROM dead_letters").fetchall()]
            else:
                ids = [int(m) for m in message_ids]
            moved = 0
            for message_id in ids:
                cursor = db.execute(
                    # The lease counter carries on, so a delivery from before the dead-letter
                    # can never settle the requeued message.
                    "INSERT INTO messages (id, body, published, visible_at, lease, object_key)"
                    " SELECT id, body, published, ?, lease, object_key"
                    " FROM dead_letters WHERE id = ?",
                    (now, message_id),
                )
                if cursor.rowcount:
                    db.execute("DELETE FROM dead_letters WHERE id = ?", (message_id,))
                    moved += 1
            self._wakeup.notify_all()
        return moved
