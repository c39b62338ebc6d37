"""Embedded upload workers: lease messages from the local queue, upload, settle each one."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from ingest.adapters.alarms import Alarm, AlarmClock
from ingest.adapters.sqlite_queue import Delivery, SqliteQueue
from ingest.contracts.message import InstanceMessage, MessageError, decode
from ingest.contracts.outcome import Outcome, Settle, defect_outcome

log = logging.getLogger(__name__)

# A delivery's lease, in seconds; workers extend it every third of it while they upload.
LEASE_SECONDS = 120.0


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
    ) -> None:
        self._remember = remember_settled
        self._queue = queue
        self._service = service
        self._batch = batch
        self._lease = lease_seconds
        self._backoff = backoff
        self._stopping = threading.Event()
        self._heartbeats = AlarmClock("lease-heartbeat")
        self._threads = [
            threading.Thread(target=self._run, name=f"upload-{n}", daemon=True)
            for n in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0, hurry: threading.Event | None = None) -> None:
        """Let the batches in hand finish (up to ``timeout`` in all), or, once ``hurry`` is set,
        leave them: their leases are released at the next start."""
        self._stopping.set()
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
                if not self.work_once():
                    wait = self._queue.next_visible_in()
                    self._queue.wait(1.0 if wait is None else min(max(wait, 0.01), 1.0))
            except Exception:
                log.exception("upload worker failed; continuing")
                self._stopping.wait(1.0)

    def work_once(self) -> bool:
        """Process one leased batch; False when nothing was visible."""
        deliveries = self._queue.pull(self._batch, self._lease)
        if not deliveries:
            return False
        decoded: list[tuple[Delivery, InstanceMessage]] = []
        for delivery in deliveries:
            try:
                decoded.append((delivery, decode(delivery.body)))
            except MessageError as exc:
                log.error("undecodable message", extra={"message_id": delivery.message_id})
                self._queue.dead_letter(delivery, f"undecodable message: {exc}")
        if not decoded:
            return True
        messages = [message for _, message in decoded]
        try:
            with _Heartbeat(self._heartbeats, self._queue, [d for d, _ in decoded], self._lease):
                outcomes = self._service.process(messages)
        except Exception as exc:  # a defect, not a per-message outcome: retry, with a reason
            log.exception("upload batch failed unexpectedly")
            outcomes = [defect_outcome(exc)] * len(messages)
        for (delivery, message), outcome in zip(decoded, outcomes, strict=True):
            if settle(self._queue, delivery, outcome, self._backoff, self._remember):
                self._service.finish(message, outcome)
            else:
                log.warning("lease lost before settling", extra={"message_id": delivery.message_id})
        return True
