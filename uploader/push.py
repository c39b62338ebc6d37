"""The push endpoint's logic: a CloudEvent (or Pub/Sub push envelope) in, ack or redeliver out.

functions-framework turns a Pub/Sub push request into a CloudEvent whose data holds the
``message``; Eventarc delivers the same shape. Returning acknowledges; ``flask.abort`` with
a 5xx status makes Pub/Sub redeliver with the subscription's backoff.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from typing import Any

import flask

from .pubsub_handler import Decision, PubSubHandler, Received
from .push_auth import CertsUnavailableError, PushAuthError, PushVerifier

log = logging.getLogger(__name__)


class EnvelopeError(ValueError):
    """The request does not carry a Pub/Sub message."""


def received_from_event(data: Any, delivery_attempt: Any = None) -> Received:
    """The CloudEvent's data (``{"message": {...}, "subscription": ...}``) → ``Received``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("message"), Mapping):
        raise EnvelopeError("event data has no Pub/Sub message")
    message = data["message"]
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise EnvelopeError("Pub/Sub message has no id")
    try:
        body = base64.b64decode(message.get("data") or "", validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise EnvelopeError("Pub/Sub message data is not base64") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in attributes.items()
    ):
        raise EnvelopeError("Pub/Sub message attributes are not strings")
    attempt = (
        delivery_attempt
        if isinstance(delivery_attempt, int) and not isinstance(delivery_attempt, bool)
        else None
    )
    return Received(message_id, body, dict(attributes), attempt)


class PushApp:
    """Verifies (optionally) and handles one push request."""

    def __init__(
        self,
        handler: PubSubHandler,
        verifier: PushVerifier | None = None,
        auth_request: Any = None,
    ) -> None:
        self._handler = handler
        self._verifier = verifier
        self._auth_request = auth_request

    def handle(self, data: Any, request: flask.Request) -> None:
        if self._verifier is not None:
            try:
                self._verifier.verify(request.headers.get("Authorization"), self._auth_request)
            except CertsUnavailableError as exc:  # not the caller's fault: try again later
                log.error("cannot verify push tokens: %s", exc)
                flask.abort(503, description="token verification unavailable")
            except PushAuthError as exc:
                log.warning("push request rejected: %s", exc)
                flask.abort(403, description="push token rejected")
        envelope = request.get_json(silent=True)
        attempt = envelope.get("deliveryAttempt") if isinstance(envelope, Mapping) else None
        try:
            received = received_from_event(data, attempt)
        except EnvelopeError as exc:
            log.error("bad push request: %s", exc)
            flask.abort(400, description=str(exc))
        handled = self._handler.handle(received, may_defer=True)
        if handled.decision is Decision.NACK:
            # Pub/Sub redelivers after the subscription's backoff; after its maximum delivery
            # attempts the dead-letter policy takes the message.
            flask.abort(503, description=f"{handled.result}: {handled.reason}"[:500])
        # No later moment exists for a push: the object goes (if configured) just before the
        # acknowledgement. A redelivery after a crash here finds it gone; see the README.
        try:
            self._handler.finish(handled)
        except Exception:  # clean-up never changes the acknowledgement
            log.exception("clean-up after upload failed", extra={"message_id": received.message_id})
