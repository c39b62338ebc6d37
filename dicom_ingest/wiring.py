"""Building the uploader from its configuration: one place, shared by every entry point."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ingest.adapters.dicomweb import HttpDicomWebClient, make_session
from ingest.adapters.gcs import GcsObjectStore, make_storage_client
from ingest.adapters.pubsub import PubSubPublisher, make_publisher_client
from ingest.contracts import logs
from ingest.contracts.ports import ObjectStore, StoreLedger
from ingest.contracts.settings import with_defaults
from uploader.config import CLOUD_FLAGS as UPLOADER_CLOUD_FLAGS
from uploader.config import PubSubConfig, UploaderConfig
from uploader.pubsub_handler import PubSubHandler
from uploader.push import PushApp
from uploader.push_auth import PushVerifier, make_request
from uploader.service import BatchLimits, UploadService


def build_dicomweb(config: UploaderConfig) -> HttpDicomWebClient:
    return HttpDicomWebClient(
        config.dicomweb_address,
        make_session(config.auth, config.bearer_token, config.request_deadline),
        timeout=(10.0, config.http_timeout),
        orthanc_rest=config.orthanc_rest_address,
    )


def build_service(
    config: UploaderConfig, objects: ObjectStore, ledger: StoreLedger | None = None
) -> UploadService:
    """The uploader; with a ledger of delivered versions (the local queue database) it knows a
    correction by itself, without one (the cloud) by the store's 409."""
    return UploadService(
        objects,
        build_dicomweb(config),
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
    config: UploaderConfig, pubsub: PubSubConfig, publisher_client: Any = None
) -> PubSubHandler:
    client = publisher_client or make_publisher_client(pubsub.publish_timeout)
    dead = oversize = None
    if pubsub.dead_letter_topic:
        dead = PubSubPublisher(client, pubsub.dead_letter_topic, pubsub.publish_timeout)
    if pubsub.oversize_topic:
        oversize = PubSubPublisher(client, pubsub.oversize_topic, pubsub.publish_timeout)
    return PubSubHandler(
        build_service(config, build_gcs_reader()),
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
