"""The uploader's outcome table against a scripted DICOMweb server, one test per row.

Each row stores a real Part-10 object in a spool, runs the upload service over real HTTP,
and checks the outcome and what the server received.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb, Recorded, Reply, failed, referenced
from support.net import refusing_port
from support.orthanc import Orthanc
from support.spool import put_instance

from ingest.adapters.dicomweb import HttpDicomWebClient, make_session
from ingest.adapters.spool import SpoolObjectStore
from ingest.contracts.message import InstanceMessage
from ingest.contracts.outcome import Action, Outcome
from uploader.service import BatchLimits, UploadService


def service(
    store: SpoolObjectStore,
    address: str,
    conflict: str = "fail",
    limits: BatchLimits | None = None,
    timeout: float = 5.0,
) -> UploadService:
    client = HttpDicomWebClient(address, make_session("none"), timeout=(2.0, timeout))
    return UploadService(store, client, conflict=conflict, limits=limits or BatchLimits())


def sequence(*replies: Callable[[Recorded], Reply]) -> Callable[[Recorded], Reply]:
    """Answer each request with the next responder; the last one repeats."""
    counter = itertools.count()
    items = list(replies)

    def respond(request: Recorded) -> Reply:
        return items[min(next(counter), len(items) - 1)](request)

    return respond


def ok(request: Recorded) -> Reply:
    return Reply(200, referenced(request.sop_uids))


def status(code: int, body: object = None) -> Callable[[Recorded], Reply]:
    return lambda request: Reply(code, body)


def failing(code: int, http: int = 200) -> Callable[[Recorded], Reply]:
    return lambda request: Reply(http, failed(request.sop_uids, code))


@dataclass(frozen=True)
class Row:
    responder: Callable[[Recorded], Reply]
    action: Action
    posts: int = 1
    deletes: int = 0
    conflict: str = "fail"
    reason: str = ""


ROWS = {
    "200-referenced": Row(ok, Action.DONE),
    "200-unconfirmed": Row(status(200), Action.RETRY, reason="without a result"),
    "200-html-login-page": Row(status(200, "<html>Sign in</html>"), Action.RETRY),
    "200-failed-out-of-resources": Row(failing(0xA700), Action.RETRY, reason="out of resources"),
    "202-failed-cannot-understand": Row(
        failing(0xC000, 202), Action.DEAD, reason="cannot understand"
    ),
    "200-failed-sop-class-mismatch": Row(failing(0xA900), Action.DEAD, reason="does not match"),
    "202-not-mentioned": Row(status(202, {}), Action.RETRY, reason="without a result"),
    "409-fail": Row(failing(0x0110, 409), Action.DEAD, reason="conflict"),
    "409-skip": Row(failing(0x0110, 409), Action.SKIPPED, conflict="skip"),
    "409-overwrite": Row(
        sequence(failing(0x0110, 409), status(200), ok),
        Action.DONE,
        posts=2,
        deletes=1,
        conflict="overwrite",
    ),
    "408": Row(status(408, "request timeout"), Action.RETRY, reason="HTTP 408"),
    "429": Row(status(429, "quota exceeded"), Action.RETRY, reason="quota exceeded"),
    "500": Row(status(500, "boom"), Action.RETRY, reason="HTTP 500"),
    "503": Row(status(503, "unavailable"), Action.RETRY, reason="HTTP 503"),
    "400": Row(status(400, "bad multipart"), Action.DEAD, reason="bad multipart"),
    "401": Row(status(401, "no credentials"), Action.DEAD, reason="HTTP 401"),
    "403": Row(
        status(403, "forbidden: dicomStores.storeInstances"), Action.DEAD, reason="forbidden"
    ),
    "413": Row(status(413, "too large"), Action.DEAD, reason="HTTP 413"),
    "415": Row(status(415, "unsupported media"), Action.DEAD, reason="HTTP 415"),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_outcome_row(name: str, tmp_path: Path, fake_dicomweb: FakeDicomWeb) -> None:
    row = ROWS[name]
    fake_dicomweb.responder = row.responder
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    [outcome] = service(store, fake_dicomweb.url, conflict=row.conflict).process([message])
    assert outcome.action is row.action, outcome
    assert row.reason in outcome.reason
    assert len(fake_dicomweb.posts()) == row.posts
    deletes = [r for r in fake_dicomweb.requests if r.method == "DELETE"]
    assert len(deletes) == row.deletes
    if deletes:
        assert deletes[0].path.endswith(
            f"/studies/{message.study_instance_uid}/series/{message.series_instance_uid}"
            f"/instances/{message.sop_instance_uid}"
        )


def test_connection_refused_is_retried(tmp_path: Path) -> None:
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    [outcome] = service(store, f"http://127.0.0.1:{refusing_port()}/dicomWeb").process([message])
    assert outcome.action is Action.RETRY
    assert "ConnectionError" in outcome.reason


def test_timeout_is_retried(tmp_path: Path, fake_dicomweb: FakeDicomWeb) -> None:
    fake_dicomweb.responder = lambda request: Reply(200, referenced(request.sop_uids), delay=1.0)
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    [outcome] = service(store, fake_dicomweb.url, timeout=0.2).process([message])
    assert outcome.action is Action.RETRY
    assert "Timeout" in outcome.reason


def test_sends_the_stored_bytes_unchanged(tmp_path: Path, fake_dicomweb: FakeDicomWeb) -> None:
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    with store.open(message.uri, message.generation) as handle:
        stored = handle.read()
    [outcome] = service(store, fake_dicomweb.url).process([message])
    assert outcome.action is Action.DONE
    [post] = fake_dicomweb.posts()
    assert post.path == "/dicomWeb/studies"
    assert post.headers["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert post.headers["Accept"] == "application/dicom+json"
    assert stored in post.body  # the part is the object, byte for byte
    assert int(post.headers["Content-Length"]) == len(post.body)


def test_batches_one_study_and_reads_per_instance_outcomes(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb
) -> None:
    store = SpoolObjectStore(tmp_path)
    study = pydicom.uid.generate_uid()
    messages = [put_instance(store, ct_dataset(study=study, seed=n)) for n in range(5)]
    other = put_instance(store, ct_dataset(seed=9))
    refused = messages[1].sop_instance_uid
    busy = messages[3].sop_instance_uid

    def partial(request: Recorded) -> Reply:
        good = [u for u in request.sop_uids if u not in (refused, busy)]
        body = failed([refused], 0xC000, stored=good)
        body["00081198"]["Value"] += failed([busy], 0xA700)["00081198"]["Value"]
        return Reply(202, body)

    fake_dicomweb.responder = partial
    outcomes = service(store, fake_dicomweb.url, limits=BatchLimits(4, 1 << 30)).process(
        [*messages, other]
    )
    posts = fake_dicomweb.posts()
    assert sorted(len(p.instances) for p in posts) == [1, 1, 4]
    for post in posts:  # never two studies in one request
        assert len({str(ds.StudyInstanceUID) for ds in post.instances}) == 1
    actions = [o.action for o in outcomes]
    assert actions == [
        Action.DONE,
        Action.DEAD,
        Action.DONE,
        Action.RETRY,
        Action.DONE,
        Action.DONE,
    ]


def test_batch_conflict_without_details_is_split(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb
) -> None:
    store = SpoolObjectStore(tmp_path)
    study = pydicom.uid.generate_uid()
    messages = [put_instance(store, ct_dataset(study=study, seed=n)) for n in range(3)]
    conflicting = messages[2].sop_instance_uid

    def respond(request: Recorded) -> Reply:
        if conflicting in request.sop_uids:
            return Reply(409, "an instance already exists")
        return Reply(200, referenced(request.sop_uids))

    fake_dicomweb.responder = respond
    outcomes = service(store, fake_dicomweb.url).process(messages)
    assert [o.action for o in outcomes] == [Action.DONE, Action.DONE, Action.DEAD]
    assert "conflict" in outcomes[2].reason
    assert [len(p.instances) for p in fake_dicomweb.posts()] == [3, 1, 1, 1]


def test_superseded_version_is_acknowledged_not_uploaded(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb
) -> None:
    store = SpoolObjectStore(tmp_path)
    ds = ct_dataset(seed=1)
    first = put_instance(store, ds)
    ds.PixelData = ct_dataset(seed=2).PixelData
    second = put_instance(store, ds)
    assert int(second.generation) > int(first.generation)
    outcomes = service(store, fake_dicomweb.url).process([first])
    assert outcomes[0].action is Action.SUPERSEDED
    assert fake_dicomweb.posts() == []
    outcomes = service(store, fake_dicomweb.url).process([second])
    assert outcomes[0].action is Action.DONE
    [post] = fake_dicomweb.posts()
    assert post.instances[0].PixelData == ds.PixelData


def test_missing_object_is_dead_lettered(tmp_path: Path, fake_dicomweb: FakeDicomWeb) -> None:
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    assert store.delete(message.uri, message.generation)
    [outcome] = service(store, fake_dicomweb.url).process([message])
    assert outcome.action is Action.DEAD
    assert "missing" in outcome.reason
    assert fake_dicomweb.posts() == []


def test_a_removed_object_whose_instance_is_stored_is_skipped(
    tmp_path: Path, orthanc: Orthanc
) -> None:
    """A redelivery after the object was removed but before the acknowledgement landed."""
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset(seed=7))
    uploader = service(store, orthanc.dicomweb)
    assert uploader.process([message])[0].action is Action.DONE
    assert store.delete(message.uri, message.generation)
    [outcome] = uploader.process([message])
    assert outcome.action is Action.SKIPPED
    assert "has it" in outcome.reason


def test_a_missing_object_the_store_cannot_be_asked_about_is_retried(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb
) -> None:
    fake_dicomweb.responder = lambda request: Reply(503, "maintenance")
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    assert store.delete(message.uri, message.generation)
    uploader = service(store, fake_dicomweb.url)
    [outcome] = uploader.process([message])
    assert outcome.action is Action.RETRY
    assert "could not be asked" in outcome.reason
    fake_dicomweb.responder = lambda request: Reply(204)  # QIDO-RS: no such instance
    [outcome] = uploader.process([message])
    assert outcome.action is Action.DEAD  # the store answers now: it does not have it
    assert outcome.reason.startswith("object missing")


def test_bearer_token_is_sent_and_not_logged(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, caplog: pytest.LogCaptureFixture
) -> None:
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    client = HttpDicomWebClient(
        fake_dicomweb.url, make_session("bearer", "s3cret-token"), timeout=(2.0, 5.0)
    )
    [outcome] = UploadService(store, client).process([message])
    assert outcome.action is Action.DONE
    [post] = fake_dicomweb.posts()
    assert post.headers["Authorization"] == "Bearer s3cret-token"
    assert "s3cret-token" not in caplog.text


def service_account(tmp_path: Path, base: str) -> Path:
    """A service-account key file whose token endpoint is the fake server (a fresh RSA key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = tmp_path / "adc.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "test-key",
                "private_key": pem,
                "client_email": "uploader@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{base}/token",
            }
        )
    )
    return path


def upload_with_adc(
    tmp_path: Path,
    fake_dicomweb: FakeDicomWeb,
    monkeypatch: pytest.MonkeyPatch,
    token: str,
    store_reply: Callable[[Recorded], Reply],
) -> tuple[InstanceMessage, Outcome]:
    """Upload one instance with --auth adc; the fake server is token endpoint and store."""

    def respond(request: Recorded) -> Reply:
        if request.path == "/token":
            return Reply(200, {"access_token": token, "expires_in": 3600})
        return store_reply(request)

    fake_dicomweb.responder = respond
    base = fake_dicomweb.url.removesuffix("/dicomWeb")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(service_account(tmp_path, base)))
    store = SpoolObjectStore(tmp_path / "spool")
    message = put_instance(store, ct_dataset())
    client = HttpDicomWebClient(fake_dicomweb.url, make_session("adc"), timeout=(2.0, 5.0))
    [outcome] = UploadService(store, client).process([message])
    return message, outcome


def test_application_default_credentials_through_google_auth(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--auth adc: google-auth finds the credentials, gets a token, and signs each request.

    The token endpoint is the fake server too, so the whole OAuth refresh runs offline.
    """
    message, outcome = upload_with_adc(
        tmp_path, fake_dicomweb, monkeypatch, "ya29.test-token",
        lambda request: Reply(200, referenced(request.sop_uids)),
    )  # fmt: skip
    assert outcome.action is Action.DONE
    token_request, post = fake_dicomweb.posts()
    assert token_request.path == "/token"
    headers = {k.lower(): v for k, v in post.headers.items()}
    assert headers["authorization"] == "Bearer ya29.test-token"
    assert post.sop_uids == [message.sop_instance_uid]


def test_unauthorized_is_not_resent_with_an_empty_body(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 401 is an outcome (dead letter with the reason), not a refresh-and-resend that would
    send the already consumed stream again."""
    _, outcome = upload_with_adc(
        tmp_path, fake_dicomweb, monkeypatch, "ya29.revoked",
        lambda request: Reply(401, "Request had invalid authentication credentials."),
    )  # fmt: skip
    assert outcome.action is Action.DEAD
    assert "invalid authentication credentials" in outcome.reason
    assert len(fake_dicomweb.posts()) == 2  # one token request, one STOW-RS; no resend
