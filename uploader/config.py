"""The uploader's configuration: one frozen, validated object built from flags and environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from ingest.adapters.pubsub import check_topic
from ingest.contracts.settings import ConfigError, Flag, parse_bool, with_defaults

from .service import CONFLICT_POLICIES

FLAGS = (
    Flag("dicomweb_address", "DICOMweb base URL (STOW-RS goes to <address>/studies)"),
    Flag("auth", "DICOMweb authentication", "none", choices=("none", "bearer", "adc")),
    Flag("bearer_token", "static bearer token for --auth bearer (prefer the env variable)"),
    Flag("conflict", "what to do on HTTP 409", "fail", choices=CONFLICT_POLICIES),
    Flag("upload_workers", "concurrent upload workers", 4, int),
    Flag("batch_max_instances", "instances of one study per STOW-RS request", 16, int),
    Flag("batch_max_bytes", "bytes per STOW-RS request", 64 << 20, int),
    Flag("http_timeout", "seconds to wait for the DICOM store to answer", 300.0, float),
    Flag("max_attempts", "delivery attempts before a message is dead-lettered", 100, int),
    Flag("min_backoff", "first retry delay in seconds", 1.0, float),
    Flag("max_backoff", "longest retry delay in seconds", 300.0, float),
    Flag("keep_uploaded", "keep objects in the spool after upload", False, parse_bool),
)


@dataclass(frozen=True, slots=True)
class UploaderConfig:
    dicomweb_address: str
    auth: str = "none"
    bearer_token: str | None = None
    conflict: str = "fail"
    upload_workers: int = 4
    batch_max_instances: int = 16
    batch_max_bytes: int = 64 << 20
    http_timeout: float = 300.0
    # About eight hours of a DICOM store outage before transient failures dead-letter;
    # permanent failures dead-letter at once.
    max_attempts: int = 100
    min_backoff: float = 1.0
    max_backoff: float = 300.0
    keep_uploaded: bool = False

    def __post_init__(self) -> None:
        parsed = urlparse(self.dicomweb_address or "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError("--dicomweb_address must be an http(s) URL")
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

    @property
    def lease_seconds(self) -> float:
        """A delivery's lease; workers extend it every third of it while they upload."""
        return 120.0

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> UploaderConfig:
        if not values.get("dicomweb_address"):
            raise ConfigError("--dicomweb_address is required")
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})

    def __repr__(self) -> str:  # keep the token out of logs and tracebacks
        token = "***" if self.bearer_token else None
        return (
            f"UploaderConfig(dicomweb_address={self.dicomweb_address!r}, auth={self.auth!r},"
            f" bearer_token={token})"
        )


PUBSUB_FLAGS = (
    Flag(
        "dead_letter_topic",
        "topic for permanent failures, published with their reason (projects/P/topics/T);"
        " without it they are left to the subscription's dead-letter policy",
    ),
    Flag(
        "oversize_topic",
        "topic for instances too large to upload within a push request; a pull worker"
        " (dicom-ingest work) takes them from its subscription",
    ),
    Flag("push_max_bytes", "largest instance a push request uploads itself", 1 << 30, int),
    Flag(
        "push_max_attempts",
        "push deliveries of a message before it goes to the oversize topic (0: never)",
        3,
        int,
    ),
    Flag("push_audience", "verify push OIDC tokens for this audience (without Cloud Run IAM)"),
    Flag("push_service_account", "the service account push tokens must be issued to"),
    Flag(
        "push_certs_url",
        "where the token signing certificates are published",
        "https://www.googleapis.com/oauth2/v1/certs",
    ),
    Flag("publish_timeout", "seconds to wait for Pub/Sub to accept a publish", 30.0, float),
)


@dataclass(frozen=True, slots=True)
class PubSubConfig:
    """What the uploader needs beyond ``UploaderConfig`` when Pub/Sub delivers the messages."""

    dead_letter_topic: str | None = None
    oversize_topic: str | None = None
    push_max_bytes: int = 1 << 30
    push_max_attempts: int = 3
    push_audience: str | None = None
    push_service_account: str | None = None
    push_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"
    publish_timeout: float = 30.0

    def __post_init__(self) -> None:
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
        if self.publish_timeout <= 0:
            raise ConfigError("--publish_timeout must be positive")

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> PubSubConfig:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__})


# In the cloud a bucket lifecycle rule ages uploaded objects out unless told otherwise.
CLOUD_FLAGS = (*with_defaults(FLAGS, keep_uploaded=True), *PUBSUB_FLAGS)
