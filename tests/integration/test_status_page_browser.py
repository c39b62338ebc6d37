"""The local status page in headless Chromium, after real sends (dcmsend) into Orthanc.

What an operator sees: the figures and the association after a send, a retrying message with
its last reason, a dead letter with its reason; the dead letter requeued with the page's own
button and stored; the same requeue posted from another site refused. Screenshots are written
to test-artifacts/.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from support.browser import chromium, screenshot
from support.datasets import ct_dataset, write
from support.net import refusing_port, wait_until
from support.orthanc import Orthanc
from support.pipeline import settled

from dicom_ingest.local import LocalPipeline
from dicom_ingest.status_page import StatusPage, StatusPageConfig
from receiver import association

# Chromium, Orthanc and DCMTK, several seconds: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow

CALLING_AE = "<i>MOD&1</i>"  # a legal AE title that is also markup: shown as text, or it fails


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chrome]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def _send(port: int, datasets: list[Dataset], folder: Path) -> None:
    files = [write(ds, folder / f"{ds.SOPInstanceUID}.dcm") for ds in datasets]
    result = subprocess.run(
        ["dcmsend", "127.0.0.1", str(port), "-aet", CALLING_AE, "-aec", "IMPORTADAPTER"]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]


def _page(pipeline: LocalPipeline) -> StatusPage:
    assert pipeline.status_page is not None
    return pipeline.status_page


def _open(browser: Chrome, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "figure-dead"))


def _text(browser: Chrome, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def _figure(browser: Chrome, key: str) -> str:
    return _text(browser, f"#figure-{key} b")


def _row(browser: Chrome, table: str, contains: str) -> list[str]:
    for row in browser.find_elements(By.CSS_SELECTOR, f"#{table} tr"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        if any(contains in c for c in cells):
            return cells
    raise AssertionError(f"no row with {contains!r} in #{table}: {browser.page_source[-3000:]}")


def _in_store(orthanc: Orthanc, sop: str) -> bool:
    found = requests.get(
        f"{orthanc.dicomweb}/instances", params={"SOPInstanceUID": sop}, timeout=30
    )
    return found.status_code == 200 and bool(found.content.strip()) and found.json() != []


def test_figures_and_the_association_after_a_real_send(
    orthanc: Orthanc,
    pipelines: Callable[..., LocalPipeline],
    browser: Chrome,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As `dicom-ingest local` configures logging: the association lines are INFO.
    caplog.set_level(logging.INFO, logger=association.__name__)
    pipeline = pipelines(orthanc.dicomweb, status_page=StatusPageConfig())
    study = ct_dataset().StudyInstanceUID
    sent = [ct_dataset(study=study, seed=n) for n in range(3)]
    _send(pipeline.receiver.port, sent, tmp_path)
    wait_until(lambda: all(_in_store(orthanc, ds.SOPInstanceUID) for ds in sent), 120, "stored")
    wait_until(lambda: settled(pipeline), 60, "queue settled")

    _open(browser, _page(pipeline).url)
    title = f"IMPORTADAPTER on port {pipeline.receiver.port}"
    assert title in _text(browser, "h1")
    assert [_figure(browser, k) for k in ("pending", "in-flight", "retrying", "dead")] == [
        "0",
        "0",
        "0",
        "0",
    ]
    cells = _row(browser, "associations", CALLING_AE)
    # ended, peer, calling AE, called AE, outcome, stored, failed, bytes, seconds, reason
    assert cells[2:7] == [CALLING_AE, "IMPORTADAPTER", "released", "3", "0"]
    assert int(cells[7]) > 3 * 64 * 64 * 2
    assert not browser.find_elements(By.CSS_SELECTOR, "#associations i"), "markup not escaped"
    source = browser.page_source
    assert "Synthetic" not in source and "SYNTH-0001" not in source  # no patient data
    screenshot(browser, "status-page-after-send")


class _OtherSite(BaseHTTPRequestHandler):
    """Another web site: a page whose form posts a requeue to the status page."""

    form = ""

    def do_GET(self) -> None:
        body = self.form.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _other_site(action: str, token: str, message_id: str) -> ThreadingHTTPServer:
    """Served as http://localhost:PORT/: another site than http://127.0.0.1:PAGE_PORT/."""
    handler = type("Handler", (_OtherSite,), {})
    handler.form = (
        "<!DOCTYPE html><html><body><h1>Win a prize</h1>"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="csrf" value="{escape(token)}">'
        f'<input type="hidden" name="id" value="{escape(message_id)}">'
        '<button id="prize" type="submit">Claim</button></form></body></html>'
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True).start()
    return server


def _click_requeue(browser: Chrome, message_id: str) -> None:
    """The page refreshes itself every few seconds: find the button again if it went stale."""

    def click(b: Chrome) -> bool:
        try:
            b.find_element(By.CSS_SELECTOR, f"#dead-{message_id} button").click()
        except StaleElementReferenceException:
            return False
        return True

    WebDriverWait(browser, 30).until(click)


def test_retrying_and_dead_letters_shown_requeued_from_the_page_not_from_another_site(
    orthanc: Orthanc,
    pipelines: Callable[..., LocalPipeline],
    browser: Chrome,
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    nowhere = f"http://127.0.0.1:{refusing_port()}/dicom-web"
    doomed, waiting = ct_dataset(seed=1), ct_dataset(seed=2)

    # A store nobody answers and one attempt allowed: the instance becomes a dead letter.
    first = pipelines(nowhere, spool=spool, max_attempts=1)
    _send(first.receiver.port, [doomed], tmp_path)
    wait_until(lambda: first.queue.stats().dead == 1, 60, "a dead letter")
    first.stop()

    # Retries far apart: the next instance stays retrying, with the reason of its failure.
    second = pipelines(
        nowhere,
        spool=spool,
        max_attempts=100,
        min_backoff=300.0,
        max_backoff=300.0,
        status_page=StatusPageConfig(),
    )
    _send(second.receiver.port, [waiting], tmp_path)
    wait_until(lambda: second.queue.stats().retrying == 1, 60, "a retrying message")
    (retrying,) = second.queue.retrying()
    (dead,) = second.queue.dead_letters()
    assert retrying.reason and dead.reason.startswith("gave up after 1 delivery attempts")
    page = _page(second)

    _open(browser, page.url)
    assert _figure(browser, "retrying") == "1" and _figure(browser, "dead") == "1"
    retry_cells = _row(browser, "retrying", waiting.SOPInstanceUID)
    assert retry_cells[1] == waiting.StudyInstanceUID and retry_cells[3] == "1"
    assert retry_cells[5] == retrying.reason
    dead_cells = _row(browser, "dead-letters", doomed.SOPInstanceUID)
    assert dead_cells[0] == dead.message_id and dead_cells[5] == dead.reason
    screenshot(browser, "status-page-retrying-and-dead")

    # Another site posts the requeue, even with the right token: refused, nothing moves.
    other = _other_site(f"{page.url}requeue", page.token, dead.message_id)
    try:
        browser.get(f"http://localhost:{other.server_address[1]}/")
        browser.find_element(By.ID, "prize").click()
        WebDriverWait(browser, 30).until(lambda b: "another site" in b.page_source)
    finally:
        other.shutdown()
        other.server_close()
    assert _text(browser, "h1") == "403"
    assert [d.message_id for d in second.queue.dead_letters()] == [dead.message_id]
    second.stop()

    # The store is back: requeue the dead letter with the page's own button.
    third = pipelines(orthanc.dicomweb, spool=spool, status_page=StatusPageConfig())
    _open(browser, _page(third).url)
    _click_requeue(browser, dead.message_id)
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "notice"))
    assert "requeued=1" in browser.current_url
    assert _text(browser, "#notice").startswith("Requeued 1 message(s)")
    wait_until(lambda: _in_store(orthanc, doomed.SOPInstanceUID), 120, "requeued instance stored")
    wait_until(lambda: third.queue.stats().dead == 0, 30, "no dead letter")
    _open(browser, _page(third).url)
    assert _figure(browser, "dead") == "0"
    assert not browser.find_elements(By.CSS_SELECTOR, "#dead-letters tr")
    screenshot(browser, "status-page-after-requeue")
