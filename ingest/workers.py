"""Embedded upload workers: lease messages from the local queue, upload, settle each one."""

from __future__ import annotations

import collections
import logging
import random
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from ingest.adapters.alarms import Alarm, AlarmClock
from ingest.adapters.sqlite_queue import DeadLetter, Delivery, SqliteQueue
from ingest.contracts import dead_letters
from ingest.contracts.message import InstanceMessage, MessageError, decode
from ingest.contracts.outcome import Outcome, Settle, defect_outcome

log = logging.getLogger(__name__)

# A delivery's lease, in seconds; workers extend it every third of it while they upload.
LEASE_SECONDS = 120.0
# While messages are retrying, one line every this many seconds says how many and why.
SUMMARY_SECONDS = 60.0
# Batches smaller than the batch size in flight at once (see QueueWorkers._work_once).
PARTIAL_BATCHES = 1
_KIND_LENGTH = 80
_CODED = re.compile(r"[\d(]")  # a status, an error number, a reason in parentheses


def report_dead_letter(letter: DeadLetter) -> None:
    """The local queue's dead letters, each logged once with its reason and counted."""
    try:
        ids = decode(letter.body).log_ids
    except MessageError:
        ids = {}
    dead_letters.report(letter.message_id, letter.reason, ids)


def retry_kind(reason: str) -> str:
    """A failure's kind, for counting like ones together: ``HTTP 503``, ``STOW-RS:
    ConnectionError (Connection refused)``: its first part, and the second when the first
    only names where it happened (no code in it)."""
    parts = [part.strip() for part in reason.split(": ", 2)]
    kind = parts[0] if _CODED.search(parts[0]) else ": ".join(parts[:2])
    return kind if len(kind) <= _KIND_LENGTH else kind[: _KIND_LENGTH - 3] + "..."


def retry_summary(reasons: dict[str, int]) -> str | None:
    """``5 messages retrying: 3 x HTTP 503, 2 x ConnectionError``; None when none are."""
    kinds: collections.Counter[str] = collections.Counter()
    for reason, count in reasons.items():
        kinds[retry_kind(reason)] += count
    total = sum(kinds.values())
    if not total:
        return None
    parts = ", ".join(f"{count} x {kind}" for kind, count in kinds.most_common())
    return f"{total} message{'s' if total != 1 else ''} retrying: {parts}"


class BatchService(Protocol):
    """What workers run per leased batch: the uploader, or the receiver's cloud shipper."""

    def process(self, messages: list[InstanceMessage]) -> list[Outcome]: ...

    def finish(self, message: InstanceMessage, outcome: Outcome) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits up to min(maximum, minimum * 2**(n-1))."""

    minimum: float = 1.0
    maximum: float = 600.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.maximum, self.minimum * 2 ** max(0, attempt - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


def settle(
    queue: SqliteQueue,
    delivery: Delivery,
    outcome: Outcome,
    backoff: Backoff,
    remember: bool = False,
) -> bool:
    """Apply one outcome to the queue: ack, retry later or dead-letter; False if lease lost."""
    if outcome.settle is Settle.ACK:
        return queue.ack(delivery, remember=remember)
    if outcome.settle is Settle.RETRY:
        return queue.retry(delivery, backoff.delay(delivery.attempt), outcome.reason)
    return queue.dead_letter(delivery, outcome.dead_letter_reason)


class _Heartbeat:
    """Extends the leases of a batch while it is being uploaded (large or slow uploads), from
    the workers' one heartbeat thread."""

    def __init__(
        self, clock: AlarmClock, queue: SqliteQueue, deliveries: list[Delivery], lease: float
    ) -> None:
        self._clock = clock
        self._queue = queue
        self._deliveries = deliveries
        self._lease = lease
        self._alarm: Alarm | None = None

    def _beat(self) -> None:
        for delivery in self._deliveries:
            try:
                self._queue.extend(delivery, self._lease)
            except Exception:  # keep beating; a lost lease shows up at settle time
                log.warning("could not extend a lease", extra={"message_id": delivery.message_id})

    def __enter__(self) -> _Heartbeat:
        self._alarm = self._clock.every(self._lease / 3, self._beat)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._alarm is not None:
            self._alarm.cancel()


class QueueWorkers:
    def __init__(
        self,
        queue: SqliteQueue,
        service: BatchService,
        workers: int = 4,
        batch: int = 16,
        lease_seconds: float = 900.0,
        backoff: Backoff = Backoff(),
        remember_settled: bool = False,
        summary_seconds: float = SUMMARY_SECONDS,
        what: str = "upload",
        partial_batches: int = PARTIAL_BATCHES,
    ) -> None:
        self._remember = remember_settled
        self._what = what  # in log lines: "upload failing", "shipping failing"
        self._summary_seconds = summary_seconds
        self._summary: Alarm | None = None
        self._queue = queue
        self._service = service
        self._batch = batch
        self._lease = lease_seconds
        self._backoff = backoff
        # Batches smaller than ``batch`` in flight at once; full batches need no slot.
        self._partial_slots = threading.BoundedSemaphore(max(1, partial_batches))
        self._stopping = threading.Event()
        # Lease heartbeats and the retry summary: timers, off the workers' threads, so a
        # summary is due even while every worker is held by a long upload.
        self._timers = AlarmClock("upload-timers")
        self._threads = [
            threading.Thread(target=self._run, name=f"upload-{n}", daemon=True)
            for n in range(workers)
        ]

    def start(self) -> None:
        self._summary = self._timers.every(self._summary_seconds, self._log_summary)
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0, hurry: threading.Event | None = None) -> None:
        """Let the batches in hand finish (up to ``timeout`` in all), or, once ``hurry`` is set,
        leave them: their leases are released at the next start."""
        self._stopping.set()
        if self._summary is not None:
            self._summary.cancel()
        self._queue.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            while thread.ident is not None and thread.is_alive() and time.monotonic() < deadline:
                if hurry is not None and hurry.is_set():
                    return
                thread.join(0.1)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                wanted = self._work_once()
                if wanted:
                    self._queue.wait(1.0, wanted)
            except Exception:
                log.exception("upload worker failed; continuing")
                self._stopping.wait(1.0)

    def _log_summary(self) -> None:
        """``retry_summary``, once per interval while any message is retrying."""
        try:
            line = retry_summary(self._queue.retry_reasons())
        except sqlite3.ProgrammingError:  # the queue closed as the workers stopped
            return
        if line is not None:
            log.warning("%s", line)

    def work_once(self) -> bool:
        """Process one leased batch; False when nothing was taken."""
        return not self._work_once()

    def _work_once(self) -> int:
        """Process one leased batch and return 0, or return how many messages it waited for.

        Batches are sized by the load, as Nagle's algorithm sizes TCP segments: a batch
        smaller than ``batch`` is taken only while fewer than ``partial_batches`` such
        batches are in flight; meanwhile later messages gather into the next one. A lone
        instance goes at once, and a study arriving faster than the store answers goes in a
        few large requests instead of one request per instance. A full batch goes whenever
        a worker is free.
        """
        slot = self._partial_slots.acquire(blocking=False)
        try:
            wanted = 1 if slot else self._batch
            deliveries = self._queue.pull(self._batch, self._lease, wanted)
            if not deliveries:
                return wanted
            if slot and len(deliveries) >= self._batch:
                self._partial_slots.release()  # a full batch: the slot is for smaller ones
                slot = False
            self._process(deliveries)
            return 0
        finally:
            if slot:
                self._partial_slots.release()

    def _process(self, deliveries: list[Delivery]) -> None:
        decoded: list[tuple[Delivery, InstanceMessage]] = []
        for delivery in deliveries:
            try:
                decoded.append((delivery, decode(delivery.body)))
            except MessageError as exc:  # the queue's dead-letter report logs it
                self._queue.dead_letter(delivery, f"undecodable message: {exc}")
        if not decoded:
            return
        messages = [message for _, message in decoded]
        try:
            with _Heartbeat(self._timers, self._queue, [d for d, _ in decoded], self._lease):
                outcomes = self._service.process(messages)
        except Exception as exc:  # a defect, not a per-message outcome: retry, with a reason
            log.exception("upload batch failed unexpectedly")
            outcomes = [defect_outcome(exc)] * len(messages)
        for (delivery, message), outcome in zip(decoded, outcomes, strict=True):
            if settle(self._queue, delivery, outcome, self._backoff, self._remember):
                self._service.finish(message, outcome)
                self._log_attempt(delivery, message, outcome)
            else:
                log.warning("lease lost before settling", extra={"message_id": delivery.message_id})

    def _log_attempt(self, delivery: Delivery, message: InstanceMessage, outcome: Outcome) -> None:
        """A line when a message first fails and one when it recovers; the rest is summed up."""
        extra = {**message.log_ids, "message_id": delivery.message_id, "attempt": delivery.attempt}
        if outcome.settle is Settle.RETRY:
            first = delivery.last_error is None
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "%s failing, will retry: %s",
                self._what,
                outcome.reason,
                extra={**extra, "outcome": "retry"},
            )
        elif delivery.last_error is not None and outcome.acknowledges:
            log.info(
                "%s recovered after %d attempts",
                self._what,
                delivery.attempt,
                extra={**extra, "outcome": outcome.action.value},
            )
