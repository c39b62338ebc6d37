"""Building the uploader from its configuration: one place, shared by every entry point."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from google.cloud import pubsub_v1

from ingest.adapters.dicomweb import HttpDicomWebClient, make_session
from ingest.adapters.gcs import GcsObjectStore, make_storage_client
from ingest.adapters.health import HealthServer
from ingest.adapters.pubsub import PubSubPublisher, make_publisher_client
from ingest.adapters.store_watch import StoreWatch
from ingest.contracts import logs
from ingest.contracts.metrics import Exposition, ScrapeFigures
from ingest.contracts.ports import ObjectStore, StoreLedger
from ingest.contracts.settings import with_defaults
from uploader.config import CLOUD_FLAGS as UPLOADER_CLOUD_FLAGS
from uploader.config import PubSubConfig, UploaderConfig
from uploader.pubsub_handler import PubSubHandler
from uploader.pull import PullConfig, PullWorker
from uploader.push import PushApp
from uploader.push_auth import PushVerifier, make_request
from uploader.service import BatchLimits, UploadService


def build_dicomweb(config: UploaderConfig, watch: StoreWatch | None = None) -> HttpDicomWebClient:
    return HttpDicomWebClient(
        config.dicomweb_address,
        make_session(config.auth, config.bearer_token, config.request_deadline),
        timeout=(10.0, config.http_timeout),
        orthanc_rest=config.orthanc_rest_address,
        observer=watch.note if watch is not None else None,
    )


def build_store_watch(config: UploaderConfig) -> tuple[StoreWatch, HttpDicomWebClient]:
    """A watch on the DICOM store, and a client that tells it what each upload saw."""
    watch = StoreWatch(config.dicomweb_address, config.store_probe_interval)
    return watch, build_dicomweb(config, watch)


def build_service(
    config: UploaderConfig,
    objects: ObjectStore,
    ledger: StoreLedger | None = None,
    client: HttpDicomWebClient | None = None,
) -> UploadService:
    """The uploader; with a ledger of delivered versions (the local queue database) it knows a
    correction by itself, without one (the cloud) by the store's 409."""
    return UploadService(
        objects,
        client or build_dicomweb(config),
        conflict=config.conflict,
        limits=BatchLimits(config.batch_max_instances, config.batch_max_bytes),
        delete_uploaded=not config.keep_uploaded,
        ledger=ledger,
    )


def build_gcs_reader(pool_size: int = 16) -> ObjectStore:
    """An object store that reads (and deletes) the ``gs://`` objects messages name."""
    staging = Path(tempfile.gettempdir())  # never written: the uploader does not put
    return GcsObjectStore(make_storage_client(pool_size), None, "", staging)


def build_pubsub_handler(
    config: UploaderConfig,
    pubsub: PubSubConfig,
    publisher_client: Any = None,
    dicomweb: HttpDicomWebClient | None = None,
) -> PubSubHandler:
    client = publisher_client or make_publisher_client(pubsub.publish_timeout)
    dead = oversize = None
    if pubsub.dead_letter_topic:
        dead = PubSubPublisher(client, pubsub.dead_letter_topic, pubsub.publish_timeout)
    if pubsub.oversize_topic:
        oversize = PubSubPublisher(client, pubsub.oversize_topic, pubsub.publish_timeout)
    return PubSubHandler(
        build_service(config, build_gcs_reader(), client=dicomweb),
        dead_letters=dead,
        oversize=oversize,
        push_max_bytes=pubsub.push_max_bytes,
        push_max_attempts=pubsub.push_max_attempts or None,
        scope=pubsub.scope,
    )


# The function's settings: the cloud uploader's, and logs in JSON lines for Cloud Logging.
FUNCTION_FLAGS = (*UPLOADER_CLOUD_FLAGS, *with_defaults(logs.FLAGS, log_format="json"))


def build_push_app(values: Mapping[str, Any]) -> PushApp:
    """The push function's app from its resolved ``FUNCTION_FLAGS``; ``ConfigError`` if invalid."""
    config = UploaderConfig.from_values(values)
    pubsub = PubSubConfig.from_values(values)
    verifier = request = None
    if pubsub.push_audience and pubsub.push_service_account:
        verifier = PushVerifier(
            pubsub.push_audience, pubsub.push_service_account, pubsub.push_certs_url
        )
        request = make_request()
    return PushApp(
        build_pubsub_handler(config, pubsub), verifier, request, pubsub.push_max_body_bytes
    )


class PullDeployment:
    """``dicom-ingest work``: the pull worker, its store watch and its health port."""

    def __init__(
        self, values: Mapping[str, Any], subscription: str, subscriber: Any = None
    ) -> None:
        config = UploaderConfig.from_values(values)
        self.store, self._client = build_store_watch(config)
        handler = build_pubsub_handler(
            config, PubSubConfig.from_values(values), dicomweb=self._client
        )
        self.worker = PullWorker(
            subscriber or pubsub_v1.SubscriberClient(),
            subscription,
            handler,
            concurrency=config.upload_workers,
        )
        port = PullConfig.from_values(values).health_port
        self.health: HealthServer | None = None
        if port:
            self.health = HealthServer(
                port,
                alive=lambda: None,
                ready=[],  # a pull worker takes no traffic; /readyz says how the store is
                metrics=Exposition(ScrapeFigures(store_reachable=self.store.reachable)),
                details=[self.store.describe],
            )

    def run(self, stop: threading.Event) -> int:
        """Pull until ``stop`` is set; the store's state is logged at start (and on change)."""
        if self.health is not None:
            self.health.start()
        try:
            self.store.start(self._client.probe)
            self.worker.run(stop)
        finally:
            self.store.stop()
            if self.health is not None:
                self.health.stop()
        return 0
