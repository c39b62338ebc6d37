"""``--ack_after=spool``: the PACS is answered once the instance is on the receiver's disk.

The receiver then runs the embedded pipeline's first half (spool object + SQLite queue,
both fsynced before the reply) and this shipper, run by the embedded queue workers, moves
each spooled instance to Cloud Storage and publishes its message to Pub/Sub. A shipped
instance's local message is acknowledged and its file removed only after Pub/Sub accepted
the cloud message; after a restart the workers resume where they stopped, so nothing the
PACS was told is stored is left behind.
"""

from __future__ import annotations

import dataclasses
import logging

from ingest.adapters.gcs import GcsObjectStore
from ingest.adapters.spool import SpoolObjectStore
from ingest.contracts.message import InstanceMessage, encode
from ingest.contracts.outcome import Action, Outcome, error_outcome
from ingest.contracts.ports import ObjectStoreError, Publisher

from .store import object_key

log = logging.getLogger(__name__)


class ShipService:
    """One spooled message → a Cloud Storage object and a Pub/Sub message naming it."""

    def __init__(self, spool: SpoolObjectStore, cloud: GcsObjectStore, publisher: Publisher):
        self._spool = spool
        self._cloud = cloud
        self._publisher = publisher

    def process(self, messages: list[InstanceMessage]) -> list[Outcome]:
        return [self._ship(message) for message in messages]

    def finish(self, message: InstanceMessage, outcome: Outcome) -> None:
        if outcome.action is not Action.DONE:
            return
        try:
            self._spool.delete(message.uri, message.generation)
        except (OSError, ObjectStoreError):
            log.warning("could not remove a shipped spool file", extra=message.log_ids)

    def _ship(self, message: InstanceMessage) -> Outcome:
        key = object_key(
            message.study_instance_uid, message.series_instance_uid, message.sop_instance_uid
        )
        try:
            with self._spool.open(message.uri, message.generation) as source:
                stored = self._cloud.upload(key, source, message.size, message.crc32c)
        except (OSError, ObjectStoreError) as exc:
            return error_outcome(exc, "spool to Cloud Storage")
        shipped = dataclasses.replace(message, uri=stored.uri, generation=stored.generation)
        # A failed publish leaves the object; the next attempt writes a newer one.
        return _publish(self._publisher, shipped, "shipped")


class OutboxPublisher:
    """Pub/Sub first; a message Pub/Sub refused is kept in a local outbox and re-published.

    The publish still fails (the PACS gets 0xA701 and sends again), but the object already
    written, and perhaps replacing a generation whose message is now superseded, gets its
    message as soon as Pub/Sub takes it again.
    """

    def __init__(self, primary: Publisher, outbox: Publisher) -> None:
        self._primary = primary
        self._outbox = outbox

    def publish(self, body: bytes, attributes: dict[str, str]) -> str:
        try:
            return self._primary.publish(body, attributes)
        except Exception:
            try:
                self._outbox.publish(body, attributes)
            except Exception:
                log.exception("could not keep an unpublished message in the outbox")
            raise


class RepublishService:
    """Run by the queue workers over the outbox: publish each kept message again."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def process(self, messages: list[InstanceMessage]) -> list[Outcome]:
        return [_publish(self._publisher, m, "re-published a kept message") for m in messages]

    def finish(self, message: InstanceMessage, outcome: Outcome) -> None:
        """Nothing to clean up: the object is the uploader's."""


def _publish(publisher: Publisher, message: InstanceMessage, done: str) -> Outcome:
    """Publish the message; done, or retry with Pub/Sub's reason."""
    try:
        message_id = publisher.publish(encode(message), message.attributes)
    except Exception as exc:
        return Outcome(Action.RETRY, f"Pub/Sub: {type(exc).__name__}: {exc}")
    log.info(done, extra={**message.log_ids, "message_id": message_id})
    return Outcome(Action.DONE)
