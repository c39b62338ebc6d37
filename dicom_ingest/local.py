"""The embedded deployment: receiver, spool, SQLite queue and upload workers in one process."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from receiver.config import ReceiverConfig
from receiver.reconcile import reconcile
from receiver.scp import Receiver
from receiver.store import StoreService
from uploader.config import UploaderConfig
from uploader.wiring import build_service
from uploader.worker import Backoff, QueueWorkers

from .objectstore import SpoolObjectStore
from .queue import QUEUE_FILE, SqliteQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalConfig:
    spool_dir: Path
    receiver: ReceiverConfig
    uploader: UploaderConfig


def open_spool(
    spool_dir: Path, called_ae: str, max_attempts: int
) -> tuple[SpoolObjectStore, SqliteQueue]:
    """The spool's objects and queue, made consistent after whatever stopped the last run.

    Partial files are removed, interrupted deliveries released, and every object that has
    no message (a crash between write and publish, a lost queue file) gets one.
    """
    spool_dir.mkdir(parents=True, exist_ok=True)
    objects = SpoolObjectStore(spool_dir)
    leftovers = objects.clear_staging()
    if leftovers:
        log.info("removed %d partial files from an earlier run", leftovers)
    queue = SqliteQueue(spool_dir / QUEUE_FILE, max_attempts=max_attempts)
    released = queue.release_leases()
    if released:
        log.info("resuming %d deliveries interrupted by an earlier stop", released)
    report = reconcile(objects, queue, called_ae, prune=True)
    if report.enqueued or report.unusable or report.pruned:
        log.warning(
            "spool reconciled: %d objects had no message and were enqueued",
            report.enqueued,
            extra={"unusable": report.unusable, "pruned": report.pruned},
        )
    return objects, queue


def run_until_signal(start: Callable[[], None], stop: Callable[[], object]) -> int:
    """Start, wait for SIGTERM or SIGINT, stop; the exit status."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    start()
    stopping.wait()
    stop()
    return 0


class LocalPipeline:
    """Everything wired together; ``start`` then ``stop`` (also on SIGTERM via ``run``)."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        up = config.uploader
        self.objects, self.queue = open_spool(
            config.spool_dir, config.receiver.dimse_aet, up.max_attempts
        )
        self.receiver = Receiver(
            config.receiver,
            StoreService(self.objects, self.queue, limits=config.receiver.scan_limits),
            self.objects.staging_dir(),
        )
        self.workers = QueueWorkers(
            self.queue,
            build_service(up, self.objects),
            workers=up.upload_workers,
            batch=up.batch_max_instances,
            lease_seconds=up.lease_seconds,
            backoff=Backoff(up.min_backoff, up.max_backoff),
            # Kept objects must not look unsent to the next start-up's reconciliation.
            remember_settled=up.keep_uploaded,
        )
        self._stopped = False

    def start(self) -> None:
        self.workers.start()
        self.receiver.start()
        stats = self.queue.stats()
        log.info(
            "ready: accepting associations; try: dcmsend 127.0.0.1 %d -aec %s <files>",
            self.receiver.port,
            self.config.receiver.dimse_aet,
            extra={
                "ae_title": self.config.receiver.dimse_aet,
                "port": self.receiver.port,
                "pending": stats.pending + stats.retrying,
                "dead_letters": stats.dead,
            },
        )

    def stop(self) -> bool:
        if self._stopped:
            return True
        self._stopped = True
        log.info("stopping: no new associations; finishing those in flight")
        drained = self.receiver.stop()
        self.workers.stop()
        self.queue.close()
        log.info("stopped", extra={"associations_drained": drained})
        return drained

    def run(self) -> int:
        return run_until_signal(self.start, self.stop)
