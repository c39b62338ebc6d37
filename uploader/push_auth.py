"""Verify the OIDC token that Pub/Sub attaches to each push request.

Behind Cloud Run IAM the platform checks the token before a request reaches the uploader.
Deployed without it (``--allow-unauthenticated``, another host), the uploader checks it
itself: ``PushVerifier.verify`` takes the ``Authorization`` header and accepts the request
only if it carries a Google-signed, unexpired ID token whose issuer is Google, whose audience
is the push endpoint's configured audience, and whose verified ``email`` is the service
account the push subscription authenticates as. Any Google account can obtain a validly
signed ID token for an arbitrary audience, so the email check is what ties a token to the
subscription; the audience check is what ties it to this endpoint.

Design: the verifier fetches Google's certificates (``{key id: PEM certificate}``) itself,
through a small in-process cache keyed by the certificate URL, and hands them to
``google.auth.jwt.decode``, which checks the signature, ``iat`` and ``exp``. The issuer,
audience, email and ``email_verified`` checks follow here so that each rejection has its own
message. Fetching the certificates here rather than through
``google.oauth2.id_token.verify_token`` (which downloads them on every call unless its
transport caches) keeps one cache independent of whichever transport the caller passes and
lets the download have a short timeout. Entries live ``CERTS_TTL_SECONDS``; Google publishes
a signing key well before using it and serves its certificates with a ``max-age`` of hours,
so a five-minute cache never misses a rotation. Failed downloads are not cached.

``make_request`` returns one process-wide ``google.auth.transport.requests.Request`` on one
``requests.Session``, so certificate downloads reuse connections. It is a single instance
because that adapter closes its session when it is garbage-collected.

Error messages are safe to log and to return: they name at most the token's ``email``,
audience and issuer claims, never the token or other parts of it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import google.auth.transport
import google.auth.transport.requests
import requests
from google.auth import jwt
from google.auth.exceptions import GoogleAuthError

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CERTS_TTL_SECONDS = 300.0
CERTS_TIMEOUT_SECONDS = 10.0

# Messages google-auth raises while decoding, mapped to ours: theirs may quote the token.
_DECODE_FAILURES = (
    ("Could not verify token signature", "token signature does not verify"),
    ("Certificate for key id", "token is signed by an unknown key"),
    ("Token expired", "token has expired"),
    ("Token used too early", "token is issued in the future"),
    ("Token does not contain required claim", "token lacks an iat or exp claim"),
    ("Unsupported signature algorithm", "token uses an unsupported signature algorithm"),
    ("Certificate key type does not match", "token algorithm does not match its key"),
)

_decode_jwt: Callable[..., Mapping[str, Any]] = jwt.decode


class PushAuthError(Exception):
    """A push request that is not authenticated as the configured subscription."""


class CertsUnavailableError(PushAuthError):
    """The signing certificates could not be fetched: the request was not judged."""


@dataclass(frozen=True, slots=True)
class PushVerifier:
    audience: str
    service_account: str
    certs_url: str = GOOGLE_CERTS_URL
    clock_skew_seconds: int = 10

    def __post_init__(self) -> None:
        if not self.audience:
            raise ValueError("push authentication needs an audience")
        if not self.service_account:
            raise ValueError("push authentication needs a service account email")
        if self.clock_skew_seconds < 0:
            raise ValueError("clock skew must not be negative")

    def verify(
        self, authorization: str | None, request: google.auth.transport.Request
    ) -> dict[str, Any]:
        """The token's claims, or ``PushAuthError`` saying why the request is refused."""
        token = _bearer_token(authorization)
        certs = _CERTS.get(self.certs_url, request)
        try:
            decoded = _decode_jwt(
                token,
                certs=certs,
                audience=None,
                clock_skew_in_seconds=self.clock_skew_seconds,
            )
        except (ValueError, TypeError, GoogleAuthError) as exc:
            raise PushAuthError(_decode_failure(exc)) from None
        claims = dict(decoded)
        issuer = claims.get("iss")
        if issuer not in GOOGLE_ISSUERS:
            raise PushAuthError(f"token issuer {issuer!r} is not Google")
        audience = claims.get("aud")
        if audience != self.audience:
            raise PushAuthError(f"token audience {audience!r} is not {self.audience!r}")
        email = claims.get("email")
        if email != self.service_account:
            raise PushAuthError(
                f"token email {email!r} is not the push service account {self.service_account!r}"
            )
        if claims.get("email_verified") is not True:
            raise PushAuthError(f"token email {email!r} is not verified")
        return claims


def make_request() -> google.auth.transport.Request:
    """The process-wide transport for certificate downloads (one shared session)."""
    return _REQUEST


_REQUEST = google.auth.transport.requests.Request(session=requests.Session())


class _CertCache:
    """Certificates per URL, each kept ``CERTS_TTL_SECONDS`` after a successful download."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, dict[str, str]]] = {}

    def get(self, url: str, request: google.auth.transport.Request) -> dict[str, str]:
        with self._lock:
            entry = self._entries.get(url)
        if entry is not None and time.monotonic() - entry[0] < CERTS_TTL_SECONDS:
            return entry[1]
        fetched_at = time.monotonic()
        certs = _fetch_certs(url, request)
        with self._lock:
            self._entries[url] = (fetched_at, certs)
        return certs


_CERTS = _CertCache()


def _fetch_certs(url: str, request: google.auth.transport.Request) -> dict[str, str]:
    try:
        response = request(url, method="GET", timeout=CERTS_TIMEOUT_SECONDS)
    except GoogleAuthError as exc:
        raise CertsUnavailableError(
            f"could not fetch certificates from {url}: {type(exc).__name__}"
        ) from exc
    if response.status != 200:
        raise CertsUnavailableError(f"certificates at {url} answered HTTP {response.status}")
    try:
        certs = json.loads(response.data)
    except ValueError as exc:
        raise CertsUnavailableError(f"certificates at {url} are not JSON") from exc
    if not _is_key_map(certs):
        raise CertsUnavailableError(f"certificates at {url} are not a key id to PEM mapping")
    return dict(certs)


def _is_key_map(value: object) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    )


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise PushAuthError("missing Authorization header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise PushAuthError("Authorization header is not a Bearer token")
    token = token.strip()
    if not token or " " in token:
        raise PushAuthError("Authorization header is not a Bearer token")
    return token


def _decode_failure(exc: Exception) -> str:
    text = str(exc)
    for prefix, reason in _DECODE_FAILURES:
        if text.startswith(prefix):
            return reason
    return f"malformed token ({type(exc).__name__})"
