"""The pure parts of metrics and operator lines: labels, summaries, safe addresses, states."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from google.auth.exceptions import RefreshError
from prometheus_client.parser import text_string_to_metric_families

from ingest.adapters.sqlite_queue import SqliteQueue
from ingest.adapters.store_watch import (
    StoreState,
    public_url,
    state_of_error,
    state_of_status,
)
from ingest.contracts import metrics
from ingest.contracts.outcome import error_text
from ingest.workers import retry_kind, retry_summary


@pytest.mark.parametrize(
    ("status", "label"), [(0, "0x0000"), (0xA700, "0xA700"), (0xC000, "0xC000"), (0x122, "0x0122")]
)
def test_dimse_status_label(status: int, label: str) -> None:
    assert metrics.dimse_status(status) == label


def test_association_outcome_labels_are_the_log_line_words() -> None:
    assert metrics.association_outcome("aborted by peer") == "aborted_by_peer"
    assert metrics.association_outcome("aborted at shutdown") == "aborted_at_shutdown"
    assert metrics.association_outcome("released") in metrics.ASSOCIATION_OUTCOMES


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("HTTP 503: Service Unavailable", "HTTP 503"),
        ("ConnectionError (Connection refused)", "ConnectionError (Connection refused)"),
        (
            "STOW-RS: ConnectionError (Connection refused)",
            "STOW-RS: ConnectionError (Connection refused)",
        ),
        ("object store: OSError: [Errno 5] I/O error: '/spool/x'", "object store: OSError"),
        ("store out of resources (0xA700): busy", "store out of resources (0xA700)"),
        ("x" * 200, "x" * 77 + "..."),
    ],
)
def test_retry_kind(reason: str, kind: str) -> None:
    assert retry_kind(reason) == kind


def test_retry_summary_counts_like_failures_together_most_first() -> None:
    reasons = {
        "HTTP 503: a": 2,
        "HTTP 503: b": 1,
        "ConnectionError (Connection refused)": 2,
        "ReadTimeout": 1,
    }
    assert retry_summary(reasons) == (
        "6 messages retrying: 3 x HTTP 503, 2 x ConnectionError (Connection refused),"
        " 1 x ReadTimeout"
    )
    assert retry_summary({"HTTP 500: x": 1}) == "1 message retrying: 1 x HTTP 500"
    assert retry_summary({}) is None


@pytest.mark.parametrize(
    ("address", "shown"),
    [
        ("https://user:pw@store.example/dicomWeb?key=k#f", "https://store.example/dicomWeb"),
        ("http://127.0.0.1:8042/dicom-web", "http://127.0.0.1:8042/dicom-web"),
        ("http://[::1]:8042/dicom-web", "http://[::1]:8042/dicom-web"),
    ],
)
def test_public_url_drops_credentials_and_query(address: str, shown: str) -> None:
    assert public_url(address) == shown


@pytest.mark.parametrize(
    ("status", "reachable", "refused"),
    [(200, True, False), (400, True, False), (409, True, False), (401, False, True),
     (403, False, True), (404, False, False), (429, False, False), (503, False, False)],
)  # fmt: skip
def test_what_a_status_says_about_the_store(status: int, reachable: bool, refused: bool) -> None:
    state = state_of_status(status)
    assert (state.reachable, state.refused_credentials) == (reachable, refused)
    assert str(status) in state.detail


def test_errors_are_described_without_their_url() -> None:
    error = requests.ConnectionError(
        "HTTPConnectionPool(host='10.0.0.1', port=1): Max retries exceeded with url:"
        " /x?secret=1 (Caused by NewConnectionError('<urllib3.connection.HTTPConnection"
        " object at 0x7f>: Failed to establish a new connection: [Errno 111] Connection"
        " refused'))"
    )
    assert error_text(error) == "ConnectionError (Connection refused)"
    assert error_text(requests.ReadTimeout("read timed out")) == "ReadTimeout: read timed out"
    assert error_text(requests.ReadTimeout("x" * 400)) == "ReadTimeout"
    assert error_text(OSError(28, "No space left on device")) == (
        "OSError: [Errno 28] No space left on device"
    )
    assert state_of_error(error) == StoreState(False, "ConnectionError (Connection refused)")
    refused = state_of_error(RefreshError("invalid_grant"))
    assert refused.refused_credentials and not refused.reachable


def test_scrape_figures_read_the_queue_and_the_spool_when_scraped(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    queue.publish(b"{}")
    queue.publish(b"{}")
    [delivery] = queue.pull(1, 60.0)
    figures = metrics.ScrapeFigures(queue=queue.stats, spool_dir=tmp_path)

    def scrape() -> dict[str, float]:
        text = metrics.Exposition(figures).render().decode()
        return {
            f"{s.name}{s.labels.get('state', '')}": s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    samples = scrape()
    assert (
        samples["dicom_ingest_queue_messagesready"],
        samples["dicom_ingest_queue_messagesleased"],
    ) == (1, 1)
    assert samples["dicom_ingest_queue_oldest_age_seconds"] >= 0
    assert samples["dicom_ingest_spool_free_bytes"] > 0
    assert "dicom_ingest_store_reachable" not in samples  # no store watch: no figure
    queue.dead_letter(delivery, "test")
    assert scrape()["dicom_ingest_queue_messagesdead"] == 1
    queue.close()
