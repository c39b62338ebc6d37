"""The embedded deployment: receiver, spool, SQLite queue and upload workers in one process."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dicom_ingest.wiring import build_service
from ingest.workers import LEASE_SECONDS, Backoff, QueueWorkers
from receiver.config import ReceiverConfig
from receiver.scp import Receiver
from receiver.store import StoreService
from uploader.config import UploaderConfig

from .recent_associations import RecentAssociations
from .startup import log_ready, open_spool, reachable, run_until_signal
from .status_page import StatusPage, StatusPageConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalConfig:
    spool_dir: Path
    receiver: ReceiverConfig
    uploader: UploaderConfig
    status_page: StatusPageConfig | None = None  # None: no page


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
        self.associations = RecentAssociations()
        self.status_page: StatusPage | None = None
        if config.status_page is not None:
            try:  # bound now: a port in use stops the start-up, naming the port
                self.status_page = StatusPage(
                    config.status_page,
                    self.queue,
                    self.associations,
                    config.receiver.dimse_aet,
                    lambda: self.receiver.port,
                )
            except Exception:
                self.queue.close()
                raise
        self._stopped = False

    def start(self) -> None:
        if self.status_page is not None:
            self.associations.attach()
        self.workers.start()
        self.receiver.start()
        if self.status_page is not None:
            self.status_page.start()
        stats = self.queue.stats()
        log_ready(
            log,
            reachable(self.config.receiver.dimse_bind),
            self.receiver.port,
            self.config.receiver.dimse_aet,
            pending=stats.pending + stats.retrying,
            dead_letters=stats.dead,
        )

    def stop(self) -> bool:
        if self._stopped:
            return True
        self._stopped = True
        log.info("stopping: no new associations; finishing those in flight")
        drained = self.receiver.stop()
        self.workers.stop()
        if self.status_page is not None:
            self.status_page.stop()
            self.associations.detach()
        self.queue.close()
        log.info("stopped", extra={"associations_drained": drained})
        return drained

    def run(self) -> int:
        return run_until_signal(self.start, self.stop)
