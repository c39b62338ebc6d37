"""The uploader's configuration: one frozen, validated object built from flags and environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from ingest.adapters.dicomweb import REQUEST_DEADLINE
from ingest.adapters.pubsub import PUBLISH_TIMEOUT, check_topic
from ingest.contracts.settings import (
    ConfigError,
    build,
    flags_of,
    parse_bool,
    setting,
    with_defaults,
)

from .scope import ObjectScope
from .service import CONFLICT_POLICIES


@dataclass(frozen=True, slots=True)
class UploaderConfig:
    dicomweb_address: str = setting(
        "DICOMweb base URL (STOW-RS goes to <address>/studies)", required=True
    )
    auth: str = setting("DICOMweb authentication", "none", choices=("none", "bearer", "adc"))
    bearer_token: str | None = setting(
        "static bearer token for --auth bearer (prefer the env variable)"
    )
    conflict: str = setting(
        "an instance delivered before, received again with different content (a different"
        " CRC32C, or HTTP 409 from the store): fail dead-letters it and keeps the stored"
        " version, overwrite deletes the stored one and stores the new one, skip acknowledges"
        " and keeps the stored version",
        "fail",
        choices=CONFLICT_POLICIES,
    )
    orthanc_rest_address: str | None = setting(
        "Orthanc's REST API root (e.g. http://127.0.0.1:8042): --conflict overwrite deletes"
        " through it (/tools/find, DELETE /instances/{id}), since Orthanc's DICOMweb plugin"
        " answers DELETE 405. Unset: DICOMweb DELETE (the Cloud Healthcare API)"
    )
    upload_workers: int = setting("concurrent upload workers", 4, int)
    batch_max_instances: int = setting("instances of one study per STOW-RS request", 16, int)
    batch_max_bytes: int = setting("bytes per STOW-RS request", 64 << 20, int)
    http_timeout: float = setting("seconds to wait for the DICOM store to answer", 300.0, float)
    request_deadline: float = setting(
        "seconds one DICOM store request may take in all, bodies included; then it is cut"
        " and the message retried",
        REQUEST_DEADLINE,
        float,
    )
    # About eight hours of a DICOM store outage before transient failures dead-letter;
    # permanent failures dead-letter at once.
    max_attempts: int = setting("delivery attempts before a message is dead-lettered", 100, int)
    min_backoff: float = setting("first retry delay in seconds", 1.0, float)
    max_backoff: float = setting("longest retry delay in seconds", 300.0, float)
    keep_uploaded: bool = setting("keep objects in the spool after upload", False, parse_bool)

    def __post_init__(self) -> None:
        parsed = urlparse(self.dicomweb_address or "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError("--dicomweb_address must be an http(s) URL")
        if self.orthanc_rest_address is not None:
            rest = urlparse(self.orthanc_rest_address)
            if rest.scheme not in ("http", "https") or not rest.netloc:
                raise ConfigError("--orthanc_rest_address must be an http(s) URL")
        if self.auth == "bearer" and not self.bearer_token:
            raise ConfigError("--auth bearer needs --bearer_token or DICOM_INGEST_BEARER_TOKEN")
        for name in ("upload_workers", "batch_max_instances", "max_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be at least 1")
        if self.batch_max_bytes < 1:
            raise ConfigError("--batch_max_bytes must be positive")
        if not 0 < self.min_backoff <= self.max_backoff:
            raise ConfigError("--min_backoff must be positive and at most --max_backoff")
        if self.http_timeout <= 0:
            raise ConfigError("--http_timeout must be positive")
        if self.request_deadline <= 0:
            raise ConfigError("--request_deadline must be positive")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> UploaderConfig:
        return build(cls, values)

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        token = "***" if self.bearer_token else None
        return (
            f"UploaderConfig(dicomweb_address={self.dicomweb_address!r}, auth={self.auth!r},"
            f" bearer_token={token})"
        )


@dataclass(frozen=True, slots=True)
class PubSubConfig:
    """What the uploader needs beyond ``UploaderConfig`` when Pub/Sub delivers the messages."""

    dead_letter_topic: str | None = setting(
        "topic for permanent failures, published with their reason (projects/P/topics/T);"
        " without it they are left to the subscription's dead-letter policy"
    )
    oversize_topic: str | None = setting(
        "topic for instances too large to upload within a push request; a pull worker"
        " (dicom-ingest work) takes them from its subscription"
    )
    push_max_bytes: int = setting("largest instance a push request uploads itself", 1 << 30, int)
    push_max_attempts: int = setting(
        "push deliveries of a message before it goes to the oversize topic (0: never)", 3, int
    )
    push_max_body_bytes: int = setting(
        "largest push request body; a larger one is answered 413 before it is read",
        1 << 20,
        int,
    )
    push_audience: str | None = setting(
        "verify push OIDC tokens for this audience (without Cloud Run IAM)"
    )
    push_service_account: str | None = setting("the service account push tokens must be issued to")
    push_certs_url: str = setting(
        "where the token signing certificates are published",
        "https://www.googleapis.com/oauth2/v1/certs",
    )
    bucket: str | None = setting(
        "upload only objects in this Cloud Storage bucket (the receiver's --bucket); a message"
        " naming another object is dead-lettered. Unset: any object a message names"
    )
    object_prefix: str = setting(
        "with --bucket, upload only objects under this prefix (the receiver's --object_prefix);"
        " empty: the whole bucket",
        "",
    )
    publish_timeout: float = PUBLISH_TIMEOUT.field()

    def __post_init__(self) -> None:
        ObjectScope.of(self.bucket, self.object_prefix)  # ConfigError if invalid
        if self.dead_letter_topic:
            check_topic(self.dead_letter_topic, "dead_letter_topic")
        if self.oversize_topic:
            check_topic(self.oversize_topic, "oversize_topic")
        if bool(self.push_audience) != bool(self.push_service_account):
            raise ConfigError("--push_audience and --push_service_account go together")
        if self.push_max_attempts < 0:
            raise ConfigError("--push_max_attempts must be 0 or more")
        if self.push_max_bytes < 1:
            raise ConfigError("--push_max_bytes must be positive")
        if self.push_max_body_bytes < 1:
            raise ConfigError("--push_max_body_bytes must be positive")
        if self.publish_timeout <= 0:
            raise ConfigError("--publish_timeout must be positive")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> PubSubConfig:
        return build(cls, values)

    @property
    def scope(self) -> ObjectScope | None:
        """The objects this uploader serves; ``None``: every object."""
        return ObjectScope.of(self.bucket, self.object_prefix)


FLAGS = flags_of(UploaderConfig)
PUBSUB_FLAGS = flags_of(PubSubConfig)
# In the cloud a bucket lifecycle rule ages uploaded objects out unless told otherwise.
CLOUD_FLAGS = (*with_defaults(FLAGS, keep_uploaded=True), *PUBSUB_FLAGS)
