"""One Pub/Sub message through the outcome table: ack, nack, dead-letter, or defer.

The push endpoint (``dicom_ingest.function``), the pull worker (``uploader.pull``) and
``dicom-ingest replay drain --upload`` all call ``PubSubHandler.handle``; they differ only in
how they acknowledge. A permanent failure is published to the dead-letter topic with its
reason as an attribute and then acknowledged; if that publish fails (or no dead-letter topic
is configured) the message is not acknowledged, so it is redelivered and, after the
subscription's ``max_delivery_attempts``, Pub/Sub moves it to the dead-letter topic itself.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from ingest.contracts.message import InstanceMessage, MessageError, decode
from ingest.contracts.outcome import Outcome, Settle, defect_outcome
from ingest.contracts.ports import Publisher

from .scope import ObjectScope
from .service import UploadService

log = logging.getLogger(__name__)

REASON_ATTRIBUTE = "dead_letter_reason"
SOURCE_ATTRIBUTE = "dead_letter_source_message_id"
DEFERRED_ATTRIBUTE = "deferred_from_message_id"
# Attributes Pub/Sub or this module add on the way to a dead-letter topic; dropped on replay.
DEAD_LETTER_ATTRIBUTES = frozenset(
    {
        REASON_ATTRIBUTE,
        SOURCE_ATTRIBUTE,
        "CloudPubSubDeadLetterSourceSubscription",
        "CloudPubSubDeadLetterSourceSubscriptionProject",
        "CloudPubSubDeadLetterSourceDeliveryCount",
        "CloudPubSubDeadLetterSourceTopicPublishTime",
        "CloudPubSubDeadLetterSourceDeliveryErrorMessage",
    }
)
_ATTRIBUTE_LIMIT = 1024  # Pub/Sub allows 1024 bytes per attribute value


class Decision(Enum):
    ACK = "ack"
    NACK = "nack"


@dataclass(frozen=True, slots=True)
class Received:
    """A Pub/Sub message as any delivery path hands it over."""

    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    delivery_attempt: int | None = None


@dataclass(frozen=True, slots=True)
class Handled:
    decision: Decision
    result: str  # done, superseded, skipped, retry, dead-lettered, deferred
    reason: str = ""
    message: InstanceMessage | None = None
    outcome: Outcome | None = None


class PubSubHandler:
    def __init__(
        self,
        service: UploadService,
        dead_letters: Publisher | None = None,
        oversize: Publisher | None = None,
        push_max_bytes: int | None = None,
        push_max_attempts: int | None = None,
        scope: ObjectScope | None = None,
    ) -> None:
        self._service = service
        self._dead_letters = dead_letters
        self._oversize = oversize
        self._push_max_bytes = push_max_bytes
        self._push_max_attempts = push_max_attempts
        self._scope = scope

    def handle(self, received: Received, may_defer: bool = False) -> Handled:
        """Upload the message's instance; the caller acks or nacks by ``decision``.

        ``may_defer`` is for the push endpoint: an instance too large to finish within a
        push request goes to the oversize topic, where the pull worker takes it.
        """
        ids = {"message_id": received.message_id}
        try:
            message = decode(received.data)
        except MessageError as exc:
            log.error("undecodable message", extra=ids)
            return self._dead_letter(received, f"undecodable message: {exc}", None)
        refusal = self._scope.refusal(message.uri) if self._scope is not None else None
        if refusal is not None:
            return self._dead_letter(received, refusal, message)
        if may_defer and self._should_defer(message, received.delivery_attempt):
            return self._defer(received, message)
        try:
            outcome = self._service.process([message])[0]
        except Exception as exc:  # a defect, not an outcome: redeliver, with a reason
            log.exception("upload failed unexpectedly", extra=ids)
            outcome = defect_outcome(exc)
        if outcome.settle is Settle.ACK:
            return Handled(Decision.ACK, outcome.action.value, outcome.reason, message, outcome)
        if outcome.settle is Settle.RETRY:
            return Handled(Decision.NACK, "retry", outcome.reason, message, outcome)
        return self._dead_letter(received, outcome.dead_letter_reason, message)

    def finish(self, handled: Handled) -> None:
        """After the acknowledgement: drop the object if so configured."""
        if handled.message is not None and handled.outcome is not None:
            self._service.finish(handled.message, handled.outcome)

    def _should_defer(self, message: InstanceMessage, attempt: int | None) -> bool:
        """Too large for a push, or pushed often enough already (each may have timed out:
        a push that outlives its deadline is cut off before it can say why)."""
        if self._oversize is None:
            return False
        too_large = self._push_max_bytes is not None and message.size > self._push_max_bytes
        tried = (
            self._push_max_attempts is not None
            and attempt is not None
            and attempt > self._push_max_attempts
        )
        return too_large or tried

    def _defer(self, received: Received, message: InstanceMessage) -> Handled:
        assert self._oversize is not None
        attributes = {**received.attributes, DEFERRED_ATTRIBUTE: received.message_id}
        try:
            new_id = self._oversize.publish(received.data, attributes)
        except Exception as exc:
            log.warning("could not defer an oversize instance: %s", exc, extra=message.log_ids)
            return Handled(Decision.NACK, "retry", f"oversize publish failed: {exc}", message)
        log.info(
            "instance of %d bytes (delivery attempt %s) deferred to the pull worker",
            message.size,
            received.delivery_attempt,
            extra={**message.log_ids, "message_id": received.message_id, "deferred_as": new_id},
        )
        return Handled(Decision.ACK, "deferred", f"deferred as message {new_id}", message)

    def _dead_letter(
        self, received: Received, reason: str, message: InstanceMessage | None
    ) -> Handled:
        extra = {"message_id": received.message_id, **(message.log_ids if message else {})}
        if self._dead_letters is None:
            log.error("permanent failure; left for the dead-letter policy: %s", reason, extra=extra)
            return Handled(Decision.NACK, "dead", reason, message)
        attributes = {
            **{k: v for k, v in received.attributes.items() if k not in DEAD_LETTER_ATTRIBUTES},
            REASON_ATTRIBUTE: _truncate(reason),
            SOURCE_ATTRIBUTE: received.message_id,
        }
        try:
            self._dead_letters.publish(received.data, attributes)
        except Exception as exc:
            log.error("dead-letter publish failed: %s", exc, extra=extra)
            return Handled(Decision.NACK, "dead", reason, message)
        log.error("dead-lettered: %s", reason, extra=extra)
        return Handled(Decision.ACK, "dead-lettered", reason, message)


def _truncate(text: str) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= _ATTRIBUTE_LIMIT:
        return text
    return encoded[: _ATTRIBUTE_LIMIT - 3].decode("utf-8", "ignore") + "..."
