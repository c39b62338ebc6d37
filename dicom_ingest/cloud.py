"""The cloud receiver: C-STORE → Cloud Storage + Pub/Sub, with health endpoints.

``--ack_after=store`` (default) answers the PACS after the object is in Cloud Storage and
Pub/Sub accepted its message. ``--ack_after=spool`` answers after the instance and its
local message are fsynced in the spool directory (a persistent volume), and ships them in
the background (``receiver.shipper``).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.adapters.disk_reserve import DiskReserve
from ingest.adapters.gcs import GcsObjectStore, make_storage_client
from ingest.adapters.private_files import make_private_dir
from ingest.adapters.pubsub import (
    PUBLISH_TIMEOUT,
    PubSubPublisher,
    check_topic,
    make_publisher_client,
)
from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.contracts.metrics import Exposition, ScrapeFigures
from ingest.contracts.settings import (
    ConfigError,
    Flag,
    build,
    byte_size,
    count,
    flags_of,
    port,
    seconds,
    setting,
)
from ingest.workers import (
    LEASE_SECONDS,
    Backoff,
    BatchService,
    QueueWorkers,
    report_dead_letter,
)
from receiver.config import ReceiverConfig
from receiver.early_upload import EarlyUploads
from receiver.health import HealthServer, echo_check
from receiver.scp import Receiver
from receiver.shipper import OutboxPublisher, RepublishService, ShipService
from receiver.store import StoreService

from .signals import StopSignals
from .startup import log_ready, open_spool, reachable, run_until_signal

log = logging.getLogger(__name__)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
# Attempts before a spooled instance's shipping is dead-lettered locally: with the 60 s
# longest backoff, days of Cloud Storage or Pub/Sub outage.
SHIP_MAX_ATTEMPTS = 10_000
OUTBOX_FILE = "outbox.sqlite3"


@dataclass(frozen=True, slots=True)
class CloudReceiverConfig:
    spool_dir: Path
    receiver: ReceiverConfig
    bucket: str = setting("Cloud Storage bucket for received instances", required=True)
    topic: str = setting("Pub/Sub topic for instance messages (projects/P/topics/T)", required=True)
    object_prefix: str = setting(
        "object name prefix: gs://BUCKET/PREFIX/<study>/<series>/<sop>.dcm", "dicom"
    )
    ack_after: str = setting(
        "answer the PACS once the instance is in Cloud Storage and Pub/Sub (store) or once it"
        " is fsynced to the spool volume and shipped in the background (spool)",
        "store",
        choices=("store", "spool"),
    )
    health_port: int = setting("HTTP port for /healthz and /readyz; 0 turns them off", 0, port)
    storage_timeout: float = setting(
        "seconds a Cloud Storage request may take, with its retries of transient errors",
        60.0,
        seconds,
    )
    publish_timeout: float = PUBLISH_TIMEOUT.field()
    ship_workers: int = setting("background shippers with --ack_after=spool", 4, count)
    early_upload_bytes: int = setting(
        "with --ack_after=store, start uploading an instance once this much of it has arrived;"
        " 0 turns it off",
        32 << 20,
        byte_size,
    )

    def __post_init__(self) -> None:
        if not isinstance(self.bucket, str) or not _BUCKET.fullmatch(self.bucket):
            raise ConfigError("--bucket must be a Cloud Storage bucket name")
        check_topic(self.topic)
        prefix = self.object_prefix.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ConfigError("--object_prefix must be a plain path such as dicom or site-a/dicom")
        if not 0 <= self.health_port <= 65535:
            raise ConfigError("--health_port must be a TCP port, or 0")
        if self.ack_after not in ("store", "spool"):
            raise ConfigError("--ack_after must be store or spool")
        if not all(0 < t < math.inf for t in (self.storage_timeout, self.publish_timeout)):
            raise ConfigError("--storage_timeout and --publish_timeout must be positive")
        if self.early_upload_bytes < 0:
            raise ConfigError("--early_upload_bytes must be 0 or more")
        if self.ship_workers < 1:
            raise ConfigError("--ship_workers must be at least 1")

    @classmethod
    def from_values(
        cls, spool_dir: Path, receiver: ReceiverConfig, values: dict[str, Any]
    ) -> CloudReceiverConfig:
        if not values.get("bucket") or not values.get("topic"):
            raise ConfigError("--bucket and --topic are required")
        if values.get("dicomweb_address"):
            log.info("--dicomweb_address is the uploader's setting; the receiver ignores it")
        return build(cls, values, spool_dir=spool_dir, receiver=receiver)


FLAGS = (
    *flags_of(CloudReceiverConfig),
    # The DICOM adapter's manifests pass it; the uploader's setting of that name uses it.
    Flag(
        "dicomweb_address",
        "accepted for compatibility with the DICOM adapter's manifests; the uploader uses it",
    ),
)


class CloudReceiver:
    """The receiver process on GKE; ``run`` serves until SIGTERM, then drains."""

    def __init__(
        self,
        config: CloudReceiverConfig,
        storage_client: Any = None,
        publisher_client: Any = None,
    ) -> None:
        self.config = config
        make_private_dir(config.spool_dir, parents=True, tighten=True)
        staging = config.spool_dir / "incoming"
        make_private_dir(staging, tighten=True)
        for leftover in staging.iterdir():  # datasets cut off by the last stop
            leftover.unlink(missing_ok=True)
        pool = config.receiver.max_associations + config.ship_workers
        self.cloud = GcsObjectStore(
            storage_client or make_storage_client(pool),
            config.bucket,
            config.object_prefix,
            staging,
            timeout=config.storage_timeout,
        )
        self.publisher = PubSubPublisher(
            publisher_client or make_publisher_client(config.publish_timeout),
            config.topic,
            config.publish_timeout,
        )
        self.early: EarlyUploads | None = None
        background: BatchService
        if config.ack_after == "spool":
            spool, self.queue = open_spool(
                config.spool_dir, config.receiver.dimse_aet, SHIP_MAX_ATTEMPTS
            )
            store = StoreService(spool, self.queue, limits=config.receiver.scan_limits)
            background, workers = (
                ShipService(spool, self.cloud, self.publisher),
                config.ship_workers,
            )
        else:
            # Messages Pub/Sub refused after their object was written wait here.
            outbox = config.spool_dir / OUTBOX_FILE
            self.queue = SqliteQueue(
                outbox,
                SHIP_MAX_ATTEMPTS,
                on_dead_letter=report_dead_letter,
                reserve=DiskReserve.beside(outbox),
            )
            self.queue.release_leases()
            if config.early_upload_bytes:
                self.early = EarlyUploads(
                    self.cloud,
                    lambda: self.receiver.transfers(),  # noqa: PLW0108 - built below
                    config.early_upload_bytes,
                    stall_timeout=config.storage_timeout,
                )
            store = StoreService(
                self.cloud,
                OutboxPublisher(self.publisher, self.queue),
                self.early,
                limits=config.receiver.scan_limits,
            )
            background, workers = RepublishService(self.publisher), 1
        # Shipping (spool) or re-publishing (outbox) from the local queue, one message at a time.
        self.workers = QueueWorkers(
            self.queue,
            background,
            workers=workers,
            batch=1,
            lease_seconds=LEASE_SECONDS,
            backoff=Backoff(0.5, 60.0),
            what="shipping" if config.ack_after == "spool" else "publishing",
        )
        # With the spool, staged files are linked into place as in local mode; otherwise
        # early uploads may read them by name while they grow.
        self.receiver = Receiver(
            config.receiver, store, staging, anonymous_staging=config.ack_after == "spool"
        )
        self.health: HealthServer | None = None
        if config.health_port:
            self.health = HealthServer(
                config.health_port,
                alive=self._alive,
                ready=[
                    echo_check(
                        self.receiver.port,
                        config.receiver.dimse_aet,
                        listening=self.receiver.serving,
                        host=reachable(config.receiver.dimse_bind),
                        probe=not config.receiver.tls_only,
                        saturated=lambda: (
                            # the check takes a slot itself: leave the last one to a PACS
                            self.receiver.active_associations()
                            >= config.receiver.max_associations - 1
                        ),
                    )
                ],
                metrics=Exposition(
                    ScrapeFigures(spool_dir=config.spool_dir, shipper_backlog=self._backlog)
                ),
            )
        self._stopped = False

    def _backlog(self) -> int:
        """Instances received and not yet in Cloud Storage and Pub/Sub (spool or outbox)."""
        stats = self.queue.stats()
        return stats.pending + stats.in_flight + stats.retrying

    def _alive(self) -> str | None:
        return None if self.receiver.serving() else "the DIMSE listener has stopped"

    def start(self) -> None:
        self.workers.start()
        self.receiver.start()
        if self.early is not None:
            self.early.start()
        if self.health is not None:
            self.health.start()
        log_ready(
            log,
            "<address>",
            self.receiver.port,
            self.config.receiver.dimse_aet,
            bucket=self.config.bucket,
            topic=self.config.topic,
            ack_after=self.config.ack_after,
        )

    def stop(self, hurry: threading.Event | None = None) -> bool:
        """Drain and stop; ``hurry`` (a second signal) cuts the drain short."""
        if self._stopped:
            return True
        self._stopped = True
        log.info("stopping: no new associations; finishing those in flight")
        drained = self.receiver.stop(hurry=hurry)
        if self.early is not None:
            self.early.stop()
        self.workers.stop(hurry=hurry)
        left = self.queue.stats()
        if self.config.ack_after == "store" and left.pending + left.retrying:
            log.warning(
                "%d unpublished messages stay in the outbox for the next start; if this"
                " volume does not outlive the pod, run `dicom-ingest replay reconcile`",
                left.pending + left.retrying,
            )
        self.queue.close()
        if self.health is not None:
            self.health.stop()
        self.publisher.close()
        log.info("stopped", extra={"associations_drained": drained})
        return drained

    def run(self, signals: StopSignals | None = None) -> int:
        return run_until_signal(self.start, self.stop, signals)
