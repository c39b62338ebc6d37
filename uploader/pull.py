"""The pull worker: streaming pull with flow control, the push endpoint's handler per message.

For draining a backlog faster than push delivers it, and for instances too large to upload
within a push request (the oversize topic's subscription). The client extends each
message's lease while it is being uploaded, up to ``max_lease``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler
from google.cloud.pubsub_v1.types import FlowControl

from ingest.contracts.settings import ConfigError, build, flags_of, port, setting

from .pubsub_handler import Decision, PubSubHandler, Received

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PullConfig:
    """What ``dicom-ingest work`` needs beyond the uploader's and Pub/Sub's settings."""

    health_port: int = setting(
        "HTTP port for /healthz, /readyz and /metrics (Prometheus); 0 turns them off", 0, port
    )

    def __post_init__(self) -> None:
        if not 0 <= self.health_port <= 65535:
            raise ConfigError("--health_port must be a TCP port, or 0")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> PullConfig:
        return build(cls, values)


FLAGS = flags_of(PullConfig)


class PullWorker:
    def __init__(
        self,
        subscriber: pubsub_v1.SubscriberClient,
        subscription: str,
        handler: PubSubHandler,
        concurrency: int = 4,
        max_lease: float = 4 * 3600.0,
        drain_seconds: float = 3300.0,
    ) -> None:
        self._subscriber = subscriber
        self._subscription = subscription
        self._handler = handler
        self._concurrency = concurrency
        self._max_lease = max_lease
        self._drain_seconds = drain_seconds  # uploads in hand may finish this long after stop
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        """Pull until ``stop`` is set or the stream fails for good (then raise)."""
        executor = ThreadPoolExecutor(self._concurrency, thread_name_prefix="pull-upload")
        future = self._subscriber.subscribe(
            self._subscription,
            self._callback,
            flow_control=FlowControl(
                max_messages=self._concurrency, max_lease_duration=self._max_lease
            ),
            scheduler=ThreadScheduler(executor),
            # On stop, uploads in hand finish and their acknowledgements are sent.
            await_callbacks_on_shutdown=True,
        )
        log.info(
            "pulling",
            extra={"subscription": self._subscription, "concurrency": self._concurrency},
        )
        future.add_done_callback(lambda _: stop.set())  # a stream that fails ends the run
        stop.wait()
        future.cancel()  # stops pulling; messages in hand are nacked by the client
        try:
            future.result(timeout=self._drain_seconds)
        except Exception as exc:
            if not future.cancelled():
                raise RuntimeError(f"streaming pull failed: {exc}") from exc
        log.info("stopped pulling", extra=dict(self.counts))

    def _callback(self, message: Any) -> None:
        received = Received(
            message.message_id, message.data, dict(message.attributes), message.delivery_attempt
        )
        try:
            handled = self._handler.handle(received)
        except Exception:  # a defect: the message comes back, the stream goes on
            log.exception("handling failed", extra={"message_id": received.message_id})
            message.nack()
            return
        with self._lock:
            self.counts[handled.result] = self.counts.get(handled.result, 0) + 1
        if handled.decision is Decision.NACK:
            message.nack()
            return
        try:
            message.ack_with_response().result(timeout=60)
        except Exception as exc:  # the message comes back; the upload is idempotent
            log.warning("ack failed: %s", exc, extra={"message_id": received.message_id})
            return
        try:
            self._handler.finish(handled)
        except Exception:  # clean-up never changes the acknowledgement or stops the worker
            log.exception("clean-up after upload failed", extra={"message_id": received.message_id})
