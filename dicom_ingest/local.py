"""The embedded deployment: receiver, spool, SQLite queue and upload workers in one process."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_ingest.wiring import build_service, build_store_watch
from ingest.adapters.health import HealthServer
from ingest.contracts.metrics import Exposition, ScrapeFigures
from ingest.contracts.settings import build, count, flags_of, port, setting
from ingest.workers import LEASE_SECONDS, Backoff, QueueWorkers
from receiver.config import ReceiverConfig
from receiver.processes import ProcessSpec, ReceiveProcesses, ReceiveProcessFailed, log_levels
from receiver.scp import Receiver
from receiver.store import StoreService
from uploader.config import UploaderConfig

from .recent_associations import RecentAssociations
from .signals import StopSignals
from .startup import log_ready, open_spool, reachable, run_until_signal
from .status_page import StatusPage, StatusPageConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LocalConfig:
    spool_dir: Path
    receiver: ReceiverConfig
    uploader: UploaderConfig
    status_page: StatusPageConfig | None = None  # None: no page
    receive_processes: int = setting(
        "processes that serve associations, each using up to one core; 0 starts one per"
        " core, 1 serves them in this process",
        0,
        count,
    )
    metrics_port: int = setting(
        "HTTP port for /metrics (Prometheus), /healthz and /readyz; 0 turns them off", 0, port
    )
    metrics_host: str = setting(
        "address the metrics port listens on; 0.0.0.0 lets other machines scrape it",
        "127.0.0.1",
    )

    @classmethod
    def from_values(
        cls,
        spool_dir: Path,
        receiver: ReceiverConfig,
        uploader: UploaderConfig,
        status_page: StatusPageConfig | None,
        values: dict[str, Any],
    ) -> LocalConfig:
        return build(
            cls,
            values,
            spool_dir=spool_dir,
            receiver=receiver,
            uploader=uploader,
            status_page=status_page,
        )


FLAGS = flags_of(LocalConfig)


class LocalPipeline:
    """Everything wired together; ``start`` then ``stop`` (also on SIGTERM via ``run``)."""

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        processes = None
        wanted = config.receive_processes or len(os.sched_getaffinity(0))
        if wanted > 1:  # first: it forks this process while nothing is open (its docstring)
            spec = ProcessSpec(config.receiver, config.spool_dir, True, log_levels())
            processes = ReceiveProcesses(wanted, spec, self._wake_worker)
        try:
            self._build(config, processes)
        except BaseException:
            if processes is not None:
                processes.stop()
            raise

    def _build(self, config: LocalConfig, processes: ReceiveProcesses | None) -> None:
        up = config.uploader
        self.objects, self.queue = open_spool(
            config.spool_dir, config.receiver.dimse_aet, up.max_attempts
        )
        service = StoreService(self.objects, self.queue, limits=config.receiver.scan_limits)
        # The spool links each staged file into place, and nothing reads them by name.
        self.receiver = Receiver(
            config.receiver,
            service,
            self.objects.staging_dir(),
            anonymous_staging=True,
            processes=processes,
        )
        self.store, self._client = build_store_watch(up)
        self.workers = QueueWorkers(
            self.queue,
            build_service(up, self.objects, ledger=self.queue, client=self._client),
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
        self.health: HealthServer | None = None
        if config.metrics_port:
            figures = ScrapeFigures(
                queue=self.queue.stats,
                spool_dir=config.spool_dir,
                store_reachable=self.store.reachable,
            )
            try:  # bound now: a port in use stops the start-up, naming the port
                self.health = HealthServer(
                    config.metrics_port,
                    alive=self._alive,
                    ready=[self._alive],
                    bind=config.metrics_host,
                    metrics=Exposition(figures),
                    details=[self.store.describe],
                    flag="metrics_port",
                )
            except Exception:
                if self.status_page is not None:
                    self.status_page.stop()
                self.queue.close()
                raise
        self._stopped = False

    def _wake_worker(self) -> None:  # a receive process has committed a message
        self.queue.wake_one()

    def _alive(self) -> str | None:
        return None if self.receiver.serving() else "the DIMSE listener has stopped"

    def start(self) -> None:
        if self.status_page is not None:
            self.associations.attach()
        self.workers.start()
        try:
            self.receiver.start()
        except ReceiveProcessFailed:
            self.stop()
            raise
        if self.status_page is not None:
            self.status_page.start()
        if self.health is not None:
            self.health.start()
        # Accepting already: the probe's answer only decides what the ready line says.
        state = self.store.start(self._client.probe)
        stats = self.queue.stats()
        log_ready(
            log,
            reachable(self.config.receiver.dimse_bind),
            self.receiver.port,
            self.config.receiver.dimse_aet,
            note=self.store.describe(),
            store_reachable=state.reachable,
            pending=stats.pending + stats.retrying,
            dead_letters=stats.dead,
            receive_processes=len(self.receiver.receive_process_ids()),
            **({"metrics_port": self.health.port} if self.health is not None else {}),
        )

    def stop(self, hurry: threading.Event | None = None) -> bool:
        """Drain and stop; ``hurry`` (a second signal) cuts the drain short."""
        if self._stopped:
            return True
        self._stopped = True
        log.info("stopping: no new associations; finishing those in flight")
        drained = self.receiver.stop(hurry=hurry)
        self.workers.stop(hurry=hurry)
        self.store.stop()
        if self.health is not None:
            self.health.stop()
        if self.status_page is not None:
            self.status_page.stop()
            self.associations.detach()
        self.queue.close()
        log.info("stopped", extra={"associations_drained": drained})
        return drained

    def run(self, signals: StopSignals | None = None) -> int:
        return run_until_signal(self.start, self.stop, signals)
