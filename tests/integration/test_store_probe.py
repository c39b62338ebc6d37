"""Start-up truth: the local pipeline says whether its DICOM store answers, and keeps saying it.

At start a QIDO-RS request with the configured auth probes the store; the ready line, one
WARNING or ERROR line, ``dicom_ingest_store_reachable`` and the ``/readyz`` body tell the
result, while associations are accepted all along (the queue is durable). While the store
fails it is probed again every ``--store_probe_interval``; uploads tell it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from support.datasets import ct_dataset
from support.fake_dicomweb import FakeDicomWeb, Recorded, Reply
from support.metrics import scrape
from support.net import free_port, on_free_port, wait_until
from support.orthanc import Orthanc, start_orthanc_on

from dicom_ingest.local import LocalPipeline

pytestmark = pytest.mark.slow

PROBE_LOGGER = "ingest.adapters.store_watch"


@pytest.fixture
def metrics_pipelines(
    pipelines: Callable[..., LocalPipeline],
) -> Callable[..., LocalPipeline]:
    """Pipelines serving /metrics on a port of their own."""

    def start(dicomweb: str, **overrides: object) -> LocalPipeline:
        return on_free_port(lambda port: pipelines(dicomweb, metrics_port=port, **overrides))

    return start


def reachable_gauge(pipeline: LocalPipeline) -> float | None:
    assert pipeline.health is not None
    return scrape(pipeline.health.port).get(("dicom_ingest_store_reachable", ()))


def readyz(pipeline: LocalPipeline) -> requests.Response:
    assert pipeline.health is not None
    return requests.get(f"http://127.0.0.1:{pipeline.health.port}/readyz", timeout=10)


def probe_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == PROBE_LOGGER]


def ready_line(caplog: pytest.LogCaptureFixture) -> str:
    (line,) = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("ready: accepting")
    ]
    return line


def send_one(port: int) -> int:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="IMPORTADAPTER")
    assert assoc.is_established
    status = assoc.send_c_store(ct_dataset(seed=7)).Status
    assoc.release()
    return int(status)


def test_a_store_that_answers_is_reachable(
    orthanc: Orthanc,
    metrics_pipelines: Callable[..., LocalPipeline],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    pipeline = metrics_pipelines(orthanc.dicomweb)
    assert reachable_gauge(pipeline) == 1
    [line] = probe_lines(caplog)
    assert line.levelno == logging.INFO
    assert line.getMessage() == f"DICOM store reachable: {orthanc.dicomweb} (HTTP 200)"
    assert f"DICOM store reachable: {orthanc.dicomweb}" in ready_line(caplog)
    answer = readyz(pipeline)
    assert answer.status_code == 200
    assert answer.text == f"ok\nDICOM store reachable: {orthanc.dicomweb} (HTTP 200)\n"


def test_a_dead_address_is_said_at_once_and_the_store_is_found_when_it_comes(
    metrics_pipelines: Callable[..., LocalPipeline],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO)
    http_port = free_port()
    address = f"http://127.0.0.1:{http_port}/dicom-web"
    pipeline = metrics_pipelines(address, store_probe_interval=0.2)

    [warning] = probe_lines(caplog)
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        f"DICOM store unreachable: {address}: ConnectionError (Connection refused);"
        " instances are still accepted and queued until it answers"
    )
    assert f"DICOM store unreachable: {address}" in ready_line(caplog)
    assert reachable_gauge(pipeline) == 0
    answer = readyz(pipeline)  # still ready: the receiver accepts, the queue keeps them
    assert answer.status_code == 200
    assert "DICOM store unreachable" in answer.text
    assert send_one(pipeline.receiver.port) == 0x0000
    # Re-probing a dead address says nothing new.
    wait_until(lambda: pipeline.queue.stats().retrying == 1, 30, "the upload retrying")
    assert len(probe_lines(caplog)) == 1

    orthanc = start_orthanc_on(tmp_path / "orthanc", http_port)
    try:
        wait_until(lambda: reachable_gauge(pipeline) == 1, 60, "the store found")
        wait_until(lambda: orthanc.instance_count() == 1, 60, "the queued instance uploaded")
    finally:
        orthanc.stop()
    messages = [r.getMessage() for r in probe_lines(caplog)]
    assert messages[1] == f"DICOM store reachable again: {address}"
    assert "DICOM store reachable: " in readyz(pipeline).text


@pytest.fixture
def refusing_store() -> Iterator[FakeDicomWeb]:
    """A store that answers every request 401, as one given the wrong token does."""

    def refuse(request: Recorded) -> Reply:
        return Reply(401, "no")

    server = FakeDicomWeb(refuse).start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("userinfo", "auth", "header"),
    [
        ("", {"auth": "bearer", "bearer_token": "s3cret-token"}, "Bearer s3cret-token"),
        ("operator:hunter2@", {}, "Basic b3BlcmF0b3I6aHVudGVyMg=="),
    ],
    ids=["bearer-token", "password-in-the-address"],
)
def test_a_store_that_refuses_the_credentials_is_an_error_naming_no_secret(
    refusing_store: FakeDicomWeb,
    metrics_pipelines: Callable[..., LocalPipeline],
    caplog: pytest.LogCaptureFixture,
    userinfo: str,
    auth: dict[str, str],
    header: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    address = refusing_store.url.replace("http://", f"http://{userinfo}")
    pipeline = metrics_pipelines(address, **auth)

    [error] = probe_lines(caplog)
    assert error.levelno == logging.ERROR
    assert error.getMessage() == (
        f"DICOM store refuses the credentials (HTTP 401): {refusing_store.url};"
        " instances are still accepted and queued until it answers"
    )
    [probe] = refusing_store.requests  # the probe, with the configured credentials
    assert probe.method == "GET" and probe.path.endswith("/studies?limit=1")
    assert probe.headers["Authorization"] == header
    assert reachable_gauge(pipeline) == 0
    assert "refuses the credentials" in readyz(pipeline).text
    logged = caplog.text + "\n".join(str(vars(r)) for r in caplog.records)
    assert "hunter2" not in logged and "s3cret-token" not in logged
