"""Push-request authentication against real RS256 tokens and certificates served over HTTP.

A ``LocalIssuer`` plays Google: it signs the tokens and serves the certificates; the verifier
downloads them through the shared transport exactly as it would from googleapis.com.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from support.oidc import LocalIssuer

from uploader import push_auth
from uploader.push_auth import (
    GOOGLE_CERTS_URL,
    CertsUnavailableError,
    PushAuthError,
    PushVerifier,
    make_request,
)

AUDIENCE = "https://uploader-abc123-ew.a.run.app/push"
PUSHER = "pubsub-push@project-id.iam.gserviceaccount.com"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as started:
        yield started


@pytest.fixture
def verifier(issuer: LocalIssuer) -> PushVerifier:
    return PushVerifier(audience=AUDIENCE, service_account=PUSHER, certs_url=issuer.certs_url)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refused(verifier: PushVerifier, authorization: str | None) -> str:
    with pytest.raises(PushAuthError) as caught:
        verifier.verify(authorization, make_request())
    return str(caught.value)


def segment(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_defaults_point_at_google() -> None:
    verifier = PushVerifier(audience=AUDIENCE, service_account=PUSHER)
    assert verifier.certs_url == GOOGLE_CERTS_URL == "https://www.googleapis.com/oauth2/v1/certs"
    assert verifier.clock_skew_seconds == 10


def test_make_request_is_one_shared_transport() -> None:
    assert make_request() is make_request()


@pytest.mark.parametrize(("audience", "service_account"), [("", PUSHER), (AUDIENCE, ""), ("", "")])
def test_configuration_must_name_audience_and_account(audience: str, service_account: str) -> None:
    with pytest.raises(ValueError, match="needs"):
        PushVerifier(audience=audience, service_account=service_account)


def test_valid_token_returns_its_claims(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    token = issuer.sign(AUDIENCE, PUSHER)
    claims = verifier.verify(bearer(token), make_request())
    assert claims["email"] == PUSHER
    assert claims["aud"] == AUDIENCE
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["email_verified"] is True
    assert claims["sub"] == "112233445566778899000"


def test_bare_issuer_name_and_lowercase_scheme_are_accepted(
    issuer: LocalIssuer, verifier: PushVerifier
) -> None:
    token = issuer.sign(AUDIENCE, PUSHER, iss="accounts.google.com")
    assert verifier.verify(f"bearer {token}", make_request())["iss"] == "accounts.google.com"


def test_expiry_within_clock_skew_is_accepted(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    now = int(time.time())
    token = issuer.sign(AUDIENCE, PUSHER, iat=now - 3600, exp=now - 3)
    assert verifier.verify(bearer(token), make_request())["exp"] == now - 3


@pytest.mark.parametrize("header", [None, ""])
def test_missing_header(verifier: PushVerifier, header: str | None) -> None:
    assert refused(verifier, header) == "missing Authorization header"


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "Token abc.def.ghi", "Bearer a b"]
)
def test_not_a_bearer_token(verifier: PushVerifier, header: str) -> None:
    assert refused(verifier, header) == "Authorization header is not a Bearer token"


def test_wrong_scheme_with_a_valid_token(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    token = issuer.sign(AUDIENCE, PUSHER)
    assert refused(verifier, f"Basic {token}") == "Authorization header is not a Bearer token"


def test_wrong_audience(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    token = issuer.sign("https://some-other-service.a.run.app/", PUSHER)
    message = refused(verifier, bearer(token))
    assert message == (
        f"token audience 'https://some-other-service.a.run.app/' is not {AUDIENCE!r}"
    )


def test_wrong_email(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    token = issuer.sign(AUDIENCE, "someone@gmail.com")
    assert refused(verifier, bearer(token)) == (
        f"token email 'someone@gmail.com' is not the push service account {PUSHER!r}"
    )


def test_missing_email(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    token = issuer.sign(AUDIENCE, PUSHER, email=None, email_verified=None)
    assert refused(verifier, bearer(token)).startswith("token email None is not")


@pytest.mark.parametrize("verified", [False, "true", 1, None])
def test_email_not_verified(issuer: LocalIssuer, verifier: PushVerifier, verified: object) -> None:
    token = issuer.sign(AUDIENCE, PUSHER, email_verified=verified)
    assert refused(verifier, bearer(token)) == f"token email {PUSHER!r} is not verified"


def test_expired(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    now = int(time.time())
    token = issuer.sign(AUDIENCE, PUSHER, iat=now - 7200, exp=now - 60)
    assert refused(verifier, bearer(token)) == "token has expired"


def test_issued_in_the_future(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    now = int(time.time())
    token = issuer.sign(AUDIENCE, PUSHER, iat=now + 600, exp=now + 4200)
    assert refused(verifier, bearer(token)) == "token is issued in the future"


def test_missing_expiry(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    token = issuer.sign(AUDIENCE, PUSHER, exp=None)
    assert refused(verifier, bearer(token)) == "token lacks an iat or exp claim"


def test_signed_by_another_key_with_the_same_key_id(
    issuer: LocalIssuer, verifier: PushVerifier
) -> None:
    impostor = LocalIssuer(kid=issuer.kid)
    token = impostor.sign(AUDIENCE, PUSHER)
    assert refused(verifier, bearer(token)) == "token signature does not verify"


def test_signed_by_an_unknown_key_id(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    token = LocalIssuer(kid="not-published").sign(AUDIENCE, PUSHER)
    assert refused(verifier, bearer(token)) == "token is signed by an unknown key"


def test_tampered_payload(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    header, _, signature = issuer.sign(AUDIENCE, "someone@gmail.com").split(".")
    forged = segment(issuer.claims(AUDIENCE, PUSHER))
    token = f"{header}.{forged}.{signature}"
    message = refused(verifier, bearer(token))
    assert message == "token signature does not verify"
    assert forged not in message


def test_unsigned_token(verifier: PushVerifier) -> None:
    header = segment({"alg": "none", "typ": "JWT"})
    payload = segment({"iss": "https://accounts.google.com", "aud": AUDIENCE, "email": PUSHER})
    message = refused(verifier, bearer(f"{header}.{payload}."))
    assert message == "token uses an unsupported signature algorithm"


def test_wrong_issuer(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    token = issuer.sign(AUDIENCE, PUSHER, iss="https://evil.example")
    assert refused(verifier, bearer(token)) == "token issuer 'https://evil.example' is not Google"


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        "e30.e30.e30.e30",
        f"{segment({'alg': 'RS256'})}.bm90IGpzb24.c2ln",
        "!!!.???.***",
    ],
)
def test_malformed_token_is_refused_without_echoing_it(verifier: PushVerifier, token: str) -> None:
    message = refused(verifier, bearer(token))
    assert message.startswith("malformed token (")
    assert token not in message


def test_certificates_are_fetched_once_for_many_pushes(
    issuer: LocalIssuer, verifier: PushVerifier
) -> None:
    for _ in range(3):
        verifier.verify(bearer(issuer.sign(AUDIENCE, PUSHER)), make_request())
    refused(verifier, bearer(issuer.sign("https://elsewhere/", PUSHER)))
    assert issuer.cert_requests == 1


def test_certificates_are_fetched_again_after_the_ttl(
    issuer: LocalIssuer, verifier: PushVerifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = issuer.sign(AUDIENCE, PUSHER)
    verifier.verify(bearer(token), make_request())
    monkeypatch.setattr(push_auth, "CERTS_TTL_SECONDS", 0.0)
    verifier.verify(bearer(token), make_request())
    assert issuer.cert_requests == 2


def test_cache_is_per_certificate_url(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    with LocalIssuer(kid=issuer.kid) as other:
        verifier.verify(bearer(issuer.sign(AUDIENCE, PUSHER)), make_request())
        elsewhere = PushVerifier(AUDIENCE, PUSHER, certs_url=other.certs_url)
        elsewhere.verify(bearer(other.sign(AUDIENCE, PUSHER)), make_request())
        assert refused(elsewhere, bearer(issuer.sign(AUDIENCE, PUSHER))) == (
            "token signature does not verify"
        )
        assert (issuer.cert_requests, other.cert_requests) == (1, 1)


def test_certificates_not_found(issuer: LocalIssuer) -> None:
    verifier = PushVerifier(AUDIENCE, PUSHER, certs_url=issuer.certs_url + "-missing")
    token = issuer.sign(AUDIENCE, PUSHER)
    with pytest.raises(CertsUnavailableError, match="answered HTTP 404"):
        verifier.verify(bearer(token), make_request())


def test_certificates_unreachable(issuer: LocalIssuer) -> None:
    url = issuer.certs_url
    token = issuer.sign(AUDIENCE, PUSHER)
    verifier = PushVerifier(AUDIENCE, PUSHER, certs_url=url)
    issuer.stop()
    with pytest.raises(CertsUnavailableError, match="could not fetch certificates"):
        verifier.verify(bearer(token), make_request())


def test_failed_download_is_not_cached(issuer: LocalIssuer, verifier: PushVerifier) -> None:
    published = issuer.certs
    issuer.certs = {}
    token = issuer.sign(AUDIENCE, PUSHER)
    with pytest.raises(CertsUnavailableError, match="not a key id to PEM mapping"):
        verifier.verify(bearer(token), make_request())
    issuer.certs = published
    assert verifier.verify(bearer(token), make_request())["email"] == PUSHER
    assert issuer.cert_requests == 2
