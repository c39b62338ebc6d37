"""The uploader function's HTTP surface: push OIDC verification and CloudEvent deliveries.

The function runs under functions-framework as its container runs it; Pub/Sub push comes
from the test Pub/Sub server, signed by a local OIDC issuer whose certificates the uploader
is pointed at.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.cloud import CloudStack, UploaderFunction
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb
from support.gcs import FakeGcs
from support.net import wait_until
from support.oidc import LocalIssuer
from support.pubsub_server import PubSubServer
from test_cloud_pipeline import send, stored_uids

# functions-framework processes and a Pub/Sub server: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

PUSHER = "pubsub-push@test-project.iam.gserviceaccount.com"
AUDIENCE = "https://uploader.example.internal/"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as started:
        yield started


@pytest.fixture
def signed_stack(
    issuer: LocalIssuer,
    fake_gcs: FakeGcs,
    fake_dicomweb: FakeDicomWeb,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CloudStack]:
    with PubSubServer(token_signer=issuer.sign) as server:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        stack = CloudStack(
            server.host,
            fake_gcs,
            fake_dicomweb.url,
            tmp_path,
            uploader_env={
                "DICOM_INGEST_PUSH_AUDIENCE": AUDIENCE,
                "DICOM_INGEST_PUSH_SERVICE_ACCOUNT": PUSHER,
                "DICOM_INGEST_PUSH_CERTS_URL": issuer.certs_url,
            },
            push_oidc={"service_account_email": PUSHER, "audience": AUDIENCE},
            name="signed",
        )
        try:
            yield stack
        finally:
            stack.close()


def _envelope(data: bytes, message_id: str = "42") -> dict[str, object]:
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": {},
            "messageId": message_id,
            "publishTime": "2026-11-25T00:00:00Z",
        },
        "subscription": "projects/test-project/subscriptions/manual",
    }


def test_signed_pushes_are_accepted_and_others_refused(
    signed_stack: CloudStack, fake_dicomweb: FakeDicomWeb, issuer: LocalIssuer, tmp_path: Path
) -> None:
    receiver = signed_stack.start_receiver()
    ds = ct_dataset()
    assert send(receiver, ds, tmp_path=tmp_path) == [0]
    wait_until(lambda: stored_uids(fake_dicomweb) == {str(ds.SOPInstanceUID)}, 30, "upload")

    assert signed_stack.uploader is not None
    url = signed_stack.uploader.url
    body = _envelope(b"{}")
    unsigned = requests.post(url, json=body, timeout=10)
    assert unsigned.status_code == 403
    other = issuer.sign(AUDIENCE, "someone-else@test-project.iam.gserviceaccount.com")
    forged = requests.post(url, json=body, headers={"Authorization": f"Bearer {other}"}, timeout=10)
    assert forged.status_code == 403
    wrong_audience = issuer.sign("https://elsewhere.example/", PUSHER)
    refused = requests.post(
        url, json=body, headers={"Authorization": f"Bearer {wrong_audience}"}, timeout=10
    )
    assert refused.status_code == 403
    assert len(fake_dicomweb.posts()) == 1  # nothing refused reached the store


def test_cloudevents_in_both_modes_are_handled(
    fake_gcs: FakeGcs,
    fake_dicomweb: FakeDicomWeb,
    tmp_path: Path,
    pubsub: str,
) -> None:
    """Eventarc delivers Pub/Sub messages as CloudEvents: structured and binary mode."""
    stack = CloudStack(pubsub, fake_gcs, fake_dicomweb.url, tmp_path, push=False, name="events")
    uploader = UploaderFunction(stack.uploader_environment)
    try:
        tap = stack.tap()
        receiver = stack.start_receiver()
        first, second = ct_dataset(seed=1), ct_dataset(seed=2)
        assert send(receiver, first, second, tmp_path=tmp_path) == [0, 0]
        messages = {m.message.message_id: m.message for m in stack.pull(tap)}
        assert len(messages) == 2
        (id_a, a), (id_b, b) = sorted(messages.items())
        data_a = {
            "message": {"data": base64.b64encode(a.data).decode(), "messageId": id_a},
            "subscription": "projects/test-project/subscriptions/eventarc",
        }
        structured = requests.post(
            uploader.url,
            data=json.dumps(
                {
                    "specversion": "1.0",
                    "type": "google.cloud.pubsub.topic.v1.messagePublished",
                    "source": f"//pubsub.googleapis.com/{stack.topic}",
                    "id": id_a,
                    "datacontenttype": "application/json",
                    "data": data_a,
                }
            ),
            headers={"Content-Type": "application/cloudevents+json"},
            timeout=30,
        )
        assert structured.status_code == 200, uploader.output()[-2000:]
        binary = requests.post(
            uploader.url,
            json={
                "message": {"data": base64.b64encode(b.data).decode(), "messageId": id_b},
                "subscription": "projects/test-project/subscriptions/eventarc",
            },
            headers={
                "ce-specversion": "1.0",
                "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
                "ce-source": f"//pubsub.googleapis.com/{stack.topic}",
                "ce-id": id_b,
            },
            timeout=30,
        )
        assert binary.status_code == 200, uploader.output()[-2000:]
        assert stored_uids(fake_dicomweb) == {str(first.SOPInstanceUID), str(second.SOPInstanceUID)}

        garbage = requests.post(uploader.url, json={"message": {"data": "!!"}}, timeout=30)
        assert garbage.status_code == 400
    finally:
        uploader.stop()
        stack.close()
