"""The queue port on Pub/Sub: publish and wait for the server's acceptance.

The receiver answers the PACS only after ``publish`` returns a message id, so a publish is
bounded in time (``timeout``) and a failure is an exception, never a silent drop.
``PUBSUB_EMULATOR_HOST`` points the client at an emulator.
"""

from __future__ import annotations

import re
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions

from ingest.contracts.settings import ConfigError, Setting, seconds


def _resource(kind: str) -> re.Pattern[str]:
    """``projects/<project id>/<kind>/<name>`` as Pub/Sub allows them."""
    return re.compile(
        rf"projects/[a-z][-a-z0-9.:]{{4,61}}[a-z0-9]/{kind}/[A-Za-z][-\w.~+%]{{2,254}}"
    )


TOPIC_PATTERN = _resource("topics")
SUBSCRIPTION_PATTERN = _resource("subscriptions")

# Publish errors worth retrying within the publish timeout.
# One setting for every Pub/Sub publisher (the receiver's, the uploader's dead letters).
PUBLISH_TIMEOUT = Setting("seconds Pub/Sub may take to accept a message", 30.0, seconds)

_RETRYABLE = (
    api_exceptions.Aborted,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.Unknown,
    api_exceptions.Cancelled,
)


def check_path(value: str, pattern: re.Pattern[str], flag: str, example: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(f"--{flag} must look like {example}, got {value!r}")
    return value


def check_topic(value: str, flag: str = "topic") -> str:
    return check_path(value, TOPIC_PATTERN, flag, "projects/PROJECT/topics/TOPIC")


def check_subscription(value: str, flag: str = "subscription") -> str:
    return check_path(value, SUBSCRIPTION_PATTERN, flag, "projects/PROJECT/subscriptions/NAME")


def make_publisher_client(
    timeout: float = 30.0, max_latency: float = 0.002
) -> pubsub_v1.PublisherClient:
    """One publisher per process, batching for latency: a message waits at most ``max_latency``.

    Concurrent associations still share a batch, so one request carries many messages under
    load while a lone message leaves almost at once.
    """
    return pubsub_v1.PublisherClient(
        batch_settings=BatchSettings(max_messages=100, max_bytes=1 << 20, max_latency=max_latency),
        publisher_options=PublisherOptions(
            retry=Retry(
                predicate=lambda exc: isinstance(exc, _RETRYABLE),
                initial=0.05,
                maximum=2.0,
                timeout=timeout,
            ),
            timeout=timeout,
        ),
    )


class PubSubPublisher:
    """``Publisher`` for one topic; returns the server's message id once it has the message."""

    def __init__(
        self, client: pubsub_v1.PublisherClient, topic: str, timeout: float = 30.0
    ) -> None:
        self._client = client
        self._topic = topic
        self._timeout = timeout

    @property
    def topic(self) -> str:
        return self._topic

    def publish(self, body: bytes, attributes: dict[str, str] | None = None) -> str:
        future: Any = self._client.publish(self._topic, body, **(attributes or {}))
        # A little longer than the client's own retry budget, so its error is the one we see.
        return str(future.result(timeout=self._timeout + 5.0))

    def close(self) -> None:
        self._client.stop()
