"""Building the uploader from its configuration: one place, shared by every entry point."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ingest.adapters.dicomweb import HttpDicomWebClient, make_session
from ingest.adapters.gcs import GcsObjectStore, make_storage_client
from ingest.adapters.pubsub import PubSubPublisher, make_publisher_client
from ingest.contracts.ports import ObjectStore
from uploader.config import PubSubConfig, UploaderConfig
from uploader.pubsub_handler import PubSubHandler
from uploader.service import BatchLimits, UploadService


def build_dicomweb(config: UploaderConfig) -> HttpDicomWebClient:
    return HttpDicomWebClient(
        config.dicomweb_address,
        make_session(config.auth, config.bearer_token),
        timeout=(10.0, config.http_timeout),
    )


def build_service(config: UploaderConfig, objects: ObjectStore) -> UploadService:
    return UploadService(
        objects,
        build_dicomweb(config),
        conflict=config.conflict,
        limits=BatchLimits(config.batch_max_instances, config.batch_max_bytes),
        delete_uploaded=not config.keep_uploaded,
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
    )
