"""The push endpoint's logic: a CloudEvent (or Pub/Sub push envelope) in, ack or redeliver out.

functions-framework turns a Pub/Sub push request into a CloudEvent whose data holds the
``message``; Eventarc delivers the same shape. Returning acknowledges; ``flask.abort`` with
a 5xx status makes Pub/Sub redeliver with the subscription's backoff.

functions-framework reads and parses the whole body before it calls the function, so the
checks that must come first sit in ``PushGate``, a WSGI middleware in front of its app: the
OIDC token (when configured) is verified from the headers alone, then a body larger than
``--push_max_body_bytes`` is answered 413 before a byte of it is read. A declared
``Content-Length`` is compared as it stands; a body without one (chunked) is read at most one
byte past the limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flask

from .pubsub_handler import Decision, PubSubHandler, Received
from .push_auth import CertsUnavailableError, PushAuthError, PushVerifier

log = logging.getLogger(__name__)

# A push envelope carries one message of a few hundred bytes: 1 MiB leaves ample room.
DEFAULT_MAX_BODY_BYTES = 1 << 20
_VERIFIED = "dicom_ingest.push_verified"  # set in the WSGI environ once the token passed
_READ_CHUNK = 64 << 10

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


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
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError("the push body limit must be positive")
        self._handler = handler
        self._verifier = verifier
        self._auth_request = auth_request
        self.max_body_bytes = max_body_bytes

    def refusal(self, authorization: str | None) -> tuple[int, str] | None:
        """(HTTP status, description) if the token does not admit the request, else ``None``."""
        if self._verifier is None:
            return None
        try:
            self._verifier.verify(authorization, self._auth_request)
        except CertsUnavailableError as exc:  # not the caller's fault: try again later
            log.error("cannot verify push tokens: %s", exc)
            return 503, "token verification unavailable"
        except PushAuthError as exc:
            log.warning("push request rejected: %s", exc)
            return 403, "push token rejected"
        return None

    def handle(self, data: Any, request: flask.Request) -> None:
        if not request.environ.get(_VERIFIED):  # served without PushGate in front
            refused = self.refusal(request.headers.get("Authorization"))
            if refused is not None:
                flask.abort(refused[0], description=refused[1])
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


class PushGate:
    """WSGI middleware: the token, then the body size, before the app reads the body."""

    def __init__(self, app: WsgiApp, push: PushApp) -> None:
        self._app = app
        self._push = push

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        refused = self._push.refusal(environ.get("HTTP_AUTHORIZATION"))
        if refused is not None:
            return _answer(start_response, *refused)
        environ[_VERIFIED] = True
        limit = self._push.max_body_bytes
        declared = (environ.get("CONTENT_LENGTH") or "").strip()
        if declared:
            if not declared.isdigit():
                return _answer(start_response, 400, "Content-Length is not a number")
            if int(declared) > limit:
                return _too_large(start_response, f"Content-Length {declared}", limit)
        elif environ.get("wsgi.input_terminated") or _chunked(environ):
            body = _read_at_most(environ["wsgi.input"], limit + 1)
            if len(body) > limit:
                return _too_large(start_response, "a chunked body", limit)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self._app(environ, start_response)


def _chunked(environ: Mapping[str, Any]) -> bool:
    return "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()


def _read_at_most(stream: Any, most: int) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < most:
        part = stream.read(min(_READ_CHUNK, most - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _too_large(start_response: StartResponse, what: str, limit: int) -> Iterable[bytes]:
    log.warning("push request refused: %s is over the %d byte limit", what, limit)
    return _answer(start_response, 413, f"request body over {limit} bytes")


_REASONS = {400: "Bad Request", 403: "Forbidden", 413: "Content Too Large", 503: "Unavailable"}


def _answer(start_response: StartResponse, status: int, text: str) -> Iterable[bytes]:
    body = (text + "\n").encode()
    start_response(
        f"{status} {_REASONS[status]}",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
