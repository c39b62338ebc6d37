"""The embedded deployment: receiver, spool, SQLite queue and upload workers in one process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from dicom_ingest.wiring import build_service
from ingest.workers import LEASE_SECONDS, Backoff, QueueWorkers
from receiver.config import ReceiverConfig
from receiver.scp import Receiver
from receiver.store import StoreService
from uploader.config import UploaderConfig

from .signals import StopSignals
from .startup import open_spool, run_until_signal

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalConfig:
    spool_dir: Path
    receiver: ReceiverConfig
    uploader: UploaderConfig


class LocalPipeline:
    """Everything wired together; ``start`` then ``stop`` (also on SIGTERM via ``run``)."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        up = config.uploader
        self.objects, self.queue = open_spool(
            config.spool_dir, config.receiver.dimse_aet, up.max_attempts
        )
        service = StoreService(self.objects, self.queue, limits=config.receiver.scan_limits)
        self.receiver = Receiver(config.receiver, service, self.objects.staging_dir())
        self.workers = QueueWorkers(
            self.queue,
            build_service(up, self.objects, ledger=self.queue),
            workers=up.upload_workers,
            batch=up.batch_max_instances,
            lease_seconds=LEASE_SECONDS,
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

    def stop(self, hurry: threading.Event | None = None) -> bool:
        """Drain and stop; ``hurry`` (a second signal) cuts the drain short."""
        if self._stopped:
            return True
        self._stopped = True
        log.info("stopping: no new associations; finishing those in flight")
        drained = self.receiver.stop(hurry=hurry)
        self.workers.stop(hurry=hurry)
        self.queue.close()
        log.info("stopped", extra={"associations_drained": drained})
        return drained

    def run(self, signals: StopSignals | None = None) -> int:
        return run_until_signal(self.start, self.stop, signals)
