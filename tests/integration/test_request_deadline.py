"""Every request to the DICOM store ends within ``--request_deadline``, bodies included.

A store that answers one byte every half second (in its body, or in its headers), or that
takes the request body one byte at a time, is cut off at the deadline: the connection is
closed, the message is retried with backoff, and the workers go on with other messages.
"""

from __future__ import annotations

import io
import ssl
import time
from pathlib import Path

import pytest
from support.datasets import ct_dataset
from support.dripping_store import DrippingStore, Mode
from support.net import wait_until
from support.spool import put_instance
from support.tls import Authority

from ingest.adapters.dicomweb import HttpDicomWebClient, instance_uids, make_session
from ingest.adapters.http_deadline import DeadlineExceeded
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.contracts.message import encode
from ingest.contracts.outcome import Action
from ingest.workers import Backoff, QueueWorkers
from uploader.config import UploaderConfig
from uploader.service import UploadService

pytestmark = pytest.mark.slow  # real processes and timers: tens of seconds in all

DEADLINE = 2.0
SLACK = 1.5  # thread start-up, a drip interval, a loaded machine


@pytest.fixture
def dripping() -> DrippingStore:
    return DrippingStore()


@pytest.fixture(autouse=True)
def _stop(dripping: DrippingStore) -> object:
    dripping.start()
    yield None
    dripping.stop()


def client(address: str, deadline: float = DEADLINE) -> HttpDicomWebClient:
    # The read timeout is far above the deadline: each drip arrives well within it.
    return HttpDicomWebClient(address, make_session("none", deadline=deadline), (2.0, 30.0))


def assert_cut(dripping: DrippingStore, started: float) -> None:
    """The store saw its connection closed by the deadline, not left open."""
    wait_until(
        lambda: all(c.closed_at is not None for c in dripping.dripping()), 5, "connection closed"
    )
    connections = dripping.dripping()
    assert connections
    for connection in connections:
        assert connection.closed_at is not None
        assert connection.closed_at - started < DEADLINE + SLACK


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_a_dripping_stow_answer_is_cut_and_retried(
    mode: Mode, tmp_path: Path, dripping: DrippingStore
) -> None:
    dripping.drips = lambda raw: mode
    store = SpoolObjectStore(tmp_path / "spool")
    message = put_instance(store, ct_dataset())
    service = UploadService(store, client(dripping.url))
    started = time.monotonic()
    [outcome] = service.process([message])
    elapsed = time.monotonic() - started
    assert outcome.action is Action.RETRY
    assert "request deadline" in outcome.reason
    assert DEADLINE - 0.1 <= elapsed < DEADLINE + SLACK
    assert_cut(dripping, started)


def test_a_request_body_the_store_takes_a_byte_at_a_time_is_cut(dripping: DrippingStore) -> None:
    dripping.drips = lambda raw: "intake"
    size = 64 << 20  # far beyond what the socket buffers hold
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        client(dripping.url).stow("1.2.3", [(io.BytesIO(bytes(size)), size)])
    assert time.monotonic() - started < DEADLINE + SLACK
    assert_cut(dripping, started)


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_qido_and_delete_end_at_the_deadline(mode: Mode, dripping: DrippingStore) -> None:
    dripping.drips = lambda raw: mode
    session = make_session("none", deadline=DEADLINE)
    calls = {
        "has_instance": lambda: client(dripping.url).has_instance("1.2", "1.2.3", "1.2.3.4"),
        "delete_instance": lambda: client(dripping.url).delete_instance("1.2", "1.2.3", "1.2.3.4"),
        "instance_uids": lambda: instance_uids(session, dripping.url, "1.2"),
    }
    for name, call in calls.items():
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            call()
        assert time.monotonic() - started < DEADLINE + SLACK, name
    assert len(dripping.dripping()) == len(calls)


@pytest.mark.parametrize("mode", ["body", "headers", "intake"])
def test_https_requests_are_cut_below_the_tls_layer(
    mode: Mode, tmp_path: Path, dripping: DrippingStore
) -> None:
    authority = Authority(tmp_path)
    server = authority.issue("store", "localhost", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.cert, server.key)
    store = DrippingStore(drips=lambda raw: mode, tls=context).start()
    try:
        session = make_session("none", deadline=DEADLINE)
        session.trust_env = False  # or REQUESTS_CA_BUNDLE would replace the test CA
        session.verify = str(authority.cert)
        https = HttpDicomWebClient(store.url, session, (2.0, 30.0))
        size = 64 << 20 if mode == "intake" else 1024
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            https.stow("1.2.3", [(io.BytesIO(bytes(size)), size)])
        assert time.monotonic() - started < DEADLINE + SLACK
        assert_cut(store, started)
    finally:
        store.stop()


def test_answers_within_the_deadline_are_untouched(dripping: DrippingStore) -> None:
    dripping.drips = lambda raw: None
    session = make_session("none", deadline=DEADLINE)
    for _ in range(3):  # the kept-alive connection is reused, and not cut later
        assert instance_uids(session, dripping.url, "1.2") == set()
        time.sleep(DEADLINE / 2)
    assert len(dripping.connections) == 1


def test_workers_move_on_while_a_dripping_upload_is_cut_and_retried(
    tmp_path: Path, dripping: DrippingStore
) -> None:
    slow, quick = ct_dataset(), ct_dataset()
    marker = str(slow.StudyInstanceUID).encode()
    dripping.drips = lambda raw: "body" if marker in raw else None
    store = SpoolObjectStore(tmp_path / "spool")
    queue = SqliteQueue(tmp_path / "queue.sqlite3", max_attempts=5)
    service = UploadService(store, client(dripping.url), delete_uploaded=True)
    pool = QueueWorkers(
        queue, service, workers=2, batch=1, lease_seconds=60.0, backoff=Backoff(30.0, 30.0)
    )
    slow_message, quick_message = put_instance(store, slow), put_instance(store, quick)
    queue.publish(encode(slow_message))
    started = time.monotonic()
    pool.start()
    try:
        wait_until(dripping.dripping, 5, "the slow upload reaching the store")
        queue.publish(encode(quick_message))
        wait_until(lambda: not (store.root / quick.StudyInstanceUID).exists(), 5, "quick upload")
        assert time.monotonic() - started < DEADLINE  # while the other one still drips
        wait_until(lambda: queue.stats().retrying == 1, DEADLINE + SLACK, "slow upload retried")
        assert time.monotonic() - started < DEADLINE + SLACK
        stats = queue.stats()
        assert (stats.pending, stats.in_flight, stats.dead) == (0, 0, 0)
    finally:
        pool.stop()
    assert_cut(dripping, started)


def test_the_deadline_is_a_setting() -> None:
    assert UploaderConfig("http://x").request_deadline == 600.0
    assert UploaderConfig("http://x", request_deadline=5.0).request_deadline == 5.0
