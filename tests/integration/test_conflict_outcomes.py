"""Corrections, 409s and Warning Reasons against a scripted DICOMweb server.

Orthanc never answers 409 nor gives a Warning Reason; the Cloud Healthcare API answers 409
when an instance exists with other content. The ledger is the local queue database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb, Recorded, Reply, failed, referenced
from support.spool import put_instance

from ingest.adapters.dicomweb import HttpDicomWebClient, make_session
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.contracts.message import InstanceMessage
from ingest.contracts.outcome import Action, Outcome
from uploader.service import UploadService


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteQueue]:
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    yield queue
    queue.close()


def service(
    store: SpoolObjectStore,
    address: str,
    conflict: str = "fail",
    ledger: SqliteQueue | None = None,
) -> UploadService:
    client = HttpDicomWebClient(address, make_session("none"), timeout=(2.0, 5.0))
    return UploadService(store, client, conflict=conflict, ledger=ledger)


def two_versions(store: SpoolObjectStore) -> tuple[InstanceMessage, Callable[[], InstanceMessage]]:
    """v1 in the spool now; the callable puts v2 (same UIDs, other pixels) when called."""
    ds = ct_dataset(seed=1)
    first = put_instance(store, ds)

    def second() -> InstanceMessage:
        ds.PixelData = ct_dataset(seed=2).PixelData
        return put_instance(store, ds)

    return first, second


def deliver_then_correct(
    tmp_path: Path, address: str, policy: str, ledger: SqliteQueue
) -> tuple[InstanceMessage, InstanceMessage, Outcome]:
    """v1 uploaded (and recorded), then v2 processed: v1's and v2's messages, v2's outcome."""
    store = SpoolObjectStore(tmp_path)
    first, put_second = two_versions(store)
    uploader = service(store, address, policy, ledger)
    assert uploader.process([first])[0].action is Action.DONE
    second = put_second()
    [outcome] = uploader.process([second])
    return first, second, outcome


def deletes_answered(status: int) -> Callable[[Recorded], Reply]:
    """A store that stores every instance and answers each DELETE with ``status``."""
    return lambda r: Reply(status) if r.method == "DELETE" else Reply(200, referenced(r.sop_uids))


def assert_held(ledger: SqliteQueue, message: InstanceMessage) -> None:
    held = ledger.held_version(message.sop_instance_uid)
    assert held is not None and held.crc32c == message.crc32c


def conflict_409(request: Recorded) -> Reply:
    return Reply(409, failed(request.sop_uids, 0x0110))


def deletes(server: FakeDicomWeb) -> list[Recorded]:
    return [r for r in server.requests if r.method == "DELETE"]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "uploader.service" and r.levelno == logging.WARNING
    ]


# The Healthcare API's 409, with no ledger (the cloud): the store's answer is the detection.


@pytest.mark.parametrize(
    ("policy", "action", "ending"),
    [
        ("fail", Action.DEAD, "--conflict fail keeps the stored version"),
        ("skip", Action.SKIPPED, "--conflict skip keeps the stored version"),
    ],
)
def test_a_409_is_a_correction_for_the_policy(
    policy: str,
    action: Action,
    ending: str,
    tmp_path: Path,
    fake_dicomweb: FakeDicomWeb,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_dicomweb.responder = conflict_409
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    [outcome] = service(store, fake_dicomweb.url, policy).process([message])
    assert outcome.action is action
    uid = message.sop_instance_uid
    assert outcome.reason.startswith(f"correction: SOP instance {uid} received again")
    assert f"CRC32C {message.crc32c}; the store: instance exists with different content" in (
        outcome.reason
    )
    assert outcome.reason.endswith(ending)
    assert deletes(fake_dicomweb) == []
    assert warnings(caplog) == [f"instance {action.value}: {outcome.reason}"]


def test_a_409_overwrite_deletes_stores_again_and_records(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, ledger: SqliteQueue
) -> None:
    answers = iter(
        [conflict_409, lambda r: Reply(200), lambda r: Reply(200, referenced(r.sop_uids))]
    )

    def respond(request: Recorded) -> Reply:
        return next(answers)(request)

    fake_dicomweb.responder = respond
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    [outcome] = service(store, fake_dicomweb.url, "overwrite", ledger).process([message])
    assert outcome.action is Action.DONE
    assert outcome.reason.endswith("--conflict overwrite stored the new version")
    assert [r.method for r in fake_dicomweb.requests] == ["POST", "DELETE", "POST"]
    assert_held(ledger, message)


def test_a_409_to_the_delete_is_a_permanent_failure(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb
) -> None:
    fake_dicomweb.responder = lambda r: conflict_409(r) if r.method == "POST" else Reply(409)
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    [outcome] = service(store, fake_dicomweb.url, "overwrite").process([message])
    assert outcome.action is Action.DEAD
    assert outcome.reason == "overwrite: delete answered HTTP 409"


# The ledger: corrections known without the store's help.


def test_a_ledger_correction_under_fail_never_reaches_the_store(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, ledger: SqliteQueue
) -> None:
    first, second, outcome = deliver_then_correct(tmp_path, fake_dicomweb.url, "fail", ledger)
    assert outcome.action is Action.DEAD
    assert f"CRC32C {second.crc32c}, the store holds {first.crc32c}" in outcome.reason
    assert len(fake_dicomweb.posts()) == 1  # v1 only
    assert_held(ledger, first)


def test_a_ledger_correction_under_overwrite_deletes_then_stores(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, ledger: SqliteQueue
) -> None:
    fake_dicomweb.responder = deletes_answered(204)
    _, second, outcome = deliver_then_correct(tmp_path, fake_dicomweb.url, "overwrite", ledger)
    assert outcome.action is Action.DONE, outcome
    assert [r.method for r in fake_dicomweb.requests] == ["POST", "DELETE", "POST"]
    [delete] = deletes(fake_dicomweb)
    assert delete.path.endswith(f"/instances/{second.sop_instance_uid}")
    assert fake_dicomweb.posts()[1].instances[0].PixelData == ct_dataset(seed=2).PixelData
    assert_held(ledger, second)


def test_a_failed_overwrite_delete_is_retried_and_the_ledger_kept(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, ledger: SqliteQueue
) -> None:
    fake_dicomweb.responder = deletes_answered(503)
    first, _, outcome = deliver_then_correct(tmp_path, fake_dicomweb.url, "overwrite", ledger)
    assert outcome.action is Action.RETRY
    assert outcome.reason == "overwrite: delete answered HTTP 503"
    assert_held(ledger, first)


def test_a_version_superseded_before_its_upload_is_no_correction(
    tmp_path: Path,
    fake_dicomweb: FakeDicomWeb,
    ledger: SqliteQueue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store never held v1: v2 is a plain first upload, whatever the policy."""
    store = SpoolObjectStore(tmp_path)
    first, put_second = two_versions(store)
    second = put_second()
    outcomes = service(store, fake_dicomweb.url, "fail", ledger).process([first, second])
    assert [o.action for o in outcomes] == [Action.SUPERSEDED, Action.DONE]
    assert [len(p.instances) for p in fake_dicomweb.posts()] == [1]
    assert not any("correction" in text for text in warnings(caplog))


# Warning Reasons (0008,1196) in ReferencedSOPSequence items.


def stored_with_warning(code: int) -> Callable[[Recorded], Reply]:
    def respond(request: Recorded) -> Reply:
        body = referenced(request.sop_uids)
        for item in body["00081199"]["Value"]:
            item["00081196"] = {"vr": "US", "Value": [code]}
        return Reply(200, body)

    return respond


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (0xB000, "coercion of data elements"),
        (0xB006, "elements discarded"),
        (0xB007, "data set does not match SOP class"),
        (0xB123, "a warning of the store's own"),
    ],
)
def test_a_warning_is_stored_and_logged(
    code: int,
    meaning: str,
    tmp_path: Path,
    fake_dicomweb: FakeDicomWeb,
    ledger: SqliteQueue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_dicomweb.responder = stored_with_warning(code)
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    [outcome] = service(store, fake_dicomweb.url, "fail", ledger).process([message])
    assert outcome.action is Action.DONE
    assert outcome.reason == f"stored with Warning Reason 0x{code:04X} ({meaning})"
    assert warnings(caplog) == [f"instance done: {outcome.reason}"]
    assert ledger.held_version(message.sop_instance_uid) is not None


def test_a_duplicate_warning_means_the_store_kept_its_version(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, ledger: SqliteQueue
) -> None:
    fake_dicomweb.responder = stored_with_warning(0xB00E)
    store = SpoolObjectStore(tmp_path)
    message = put_instance(store, ct_dataset())
    [outcome] = service(store, fake_dicomweb.url, "fail", ledger).process([message])
    assert outcome.action is Action.DEAD
    assert "Warning Reason 0xB00E: the store kept the version it held" in outcome.reason
    assert ledger.held_version(message.sop_instance_uid) is None


def test_a_correction_in_a_batch_leaves_the_others_to_the_batch(
    tmp_path: Path, fake_dicomweb: FakeDicomWeb, ledger: SqliteQueue
) -> None:
    store = SpoolObjectStore(tmp_path)
    first, put_second = two_versions(store)
    uploader = service(store, fake_dicomweb.url, "fail", ledger)
    assert uploader.process([first])[0].action is Action.DONE
    study = first.study_instance_uid
    others = [put_instance(store, ct_dataset(study=study, seed=n)) for n in (3, 4)]
    outcomes = uploader.process([others[0], put_second(), others[1]])
    assert [o.action for o in outcomes] == [Action.DONE, Action.DEAD, Action.DONE]
    assert [p.sop_uids for p in fake_dicomweb.posts()[1:]] == [
        [others[0].sop_instance_uid, others[1].sop_instance_uid]
    ]
    for message in others:
        assert_held(ledger, message)
    assert_held(ledger, first)
