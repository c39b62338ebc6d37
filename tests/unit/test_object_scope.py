"""The bucket (and prefix) allow-list: a message naming another object is dead-lettered."""

from __future__ import annotations

import pytest
from support.fakes import RecordingPublisher
from test_pubsub_handler import FakeService, make_message, make_received

from ingest.contracts.settings import ConfigError
from uploader.config import PUBSUB_FLAGS, PubSubConfig
from uploader.pubsub_handler import REASON_ATTRIBUTE, Decision, PubSubHandler
from uploader.scope import ObjectScope

SCOPE = ObjectScope("site-bucket", "dicom")
INSIDE = "gs://site-bucket/dicom/1.2.3/1.2.3.4/1.2.3.4.5.dcm"


def _handle(uri: str, scope: ObjectScope | None = SCOPE) -> tuple[FakeService, RecordingPublisher]:
    service = FakeService()
    dead_letters = RecordingPublisher()
    handler = PubSubHandler(service, dead_letters, scope=scope)  # type: ignore[arg-type]
    handled = handler.handle(make_received(make_message(uri=uri)), may_defer=True)
    if service.processed:
        assert handled.decision is Decision.ACK and handled.result == "done"
    return service, dead_letters


@pytest.mark.parametrize(
    "uri",
    [INSIDE, "gs://site-bucket/dicom/sub/dir/x.dcm", "gs://site-bucket/dicom/..x/y.dcm"],
)
def test_an_object_in_the_bucket_and_prefix_is_uploaded(uri: str) -> None:
    service, dead_letters = _handle(uri)
    assert len(service.processed) == 1
    assert dead_letters.published == []


def test_the_whole_bucket_is_served_without_a_prefix() -> None:
    service, _ = _handle("gs://site-bucket/elsewhere/x.dcm", ObjectScope("site-bucket"))
    assert len(service.processed) == 1


def test_without_a_bucket_every_object_is_uploaded_as_before() -> None:
    service, _ = _handle("gs://any-other-bucket/anything/x.dcm", None)
    assert len(service.processed) == 1


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("gs://other-bucket/dicom/1.2.3/1.2.3.4/1.2.3.4.5.dcm", "bucket 'other-bucket'"),
        ("gs://site-bucket-evil/dicom/x.dcm", "bucket 'site-bucket-evil'"),
        ("gs://site-bucket/other/1.2.3/x.dcm", "object name is outside"),
        ("gs://site-bucket/dicom-evil/1.2.3/x.dcm", "object name is outside"),
        ("gs://site-bucket/dicomx.dcm", "object name is outside"),
        ("gs://site-bucket/dicom", "object name is outside"),
        ("gs://site-bucket/dicom/../other/x.dcm", "object name is outside"),
        ("gs://site-bucket/dicom/./x.dcm", "object name is outside"),
        ("gs://site-bucket/dicom//x.dcm", "object name is outside"),
        ("gs://site-bucket//dicom/x.dcm", "object name is outside"),
        ("file:///spool/dicom/x.dcm", "not a Cloud Storage object"),
        ("gs://site-bucket", "not a Cloud Storage object"),
    ],
)
def test_an_object_outside_is_dead_lettered_with_the_reason(uri: str, says: str) -> None:
    service, dead_letters = _handle(uri)
    assert service.processed == []
    assert service.finished == []
    ((_, attributes),) = dead_letters.published
    reason = attributes[REASON_ATTRIBUTE]
    assert says in reason
    assert "gs://site-bucket/dicom/ which this uploader serves" in reason
    assert "x.dcm" not in reason and "1.2.3" not in reason


def config(**values: object) -> PubSubConfig:
    return PubSubConfig.from_values({**{f.name: f.default for f in PUBSUB_FLAGS}, **values})


def test_settings_build_the_scope() -> None:
    assert config().scope is None
    assert config(bucket="site-bucket").scope == ObjectScope("site-bucket", "")
    assert config(bucket="site-bucket", object_prefix="/a/b/").scope == ObjectScope(
        "site-bucket", "a/b"
    )


@pytest.mark.parametrize(
    "values",
    [
        {"bucket": "Not_A_Bucket"},
        {"bucket": "site-bucket", "object_prefix": "a/../b"},
        {"bucket": "site-bucket", "object_prefix": "a//b"},
        {"object_prefix": "dicom"},
    ],
)
def test_invalid_scope_settings_are_refused(values: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        config(**values)
