"""``dicom-ingest local --ui_port``: the page served by the real process, a taken port named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from support.net import on_free_port, refusing_port, wait_until
from support.process import IngestProcess

# Real processes, seconds each: `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


def _started(spool: Path, dicomweb: str, ui_port: int) -> IngestProcess:
    process = IngestProcess(spool, dicomweb, "--ui_port", str(ui_port))
    try:
        return process.wait_ready()
    except Exception:
        process.stop()
        raise


def test_local_serves_the_page_and_names_a_taken_port(tmp_path: Path) -> None:
    dicomweb = f"http://127.0.0.1:{refusing_port()}/dicom-web"
    process = on_free_port(lambda port: _started(tmp_path / "one", dicomweb, port))
    try:
        (line,) = [
            json.loads(text)
            for text in process.output().splitlines()
            if text.startswith("{") and "status page" in json.loads(text)["message"]
        ]
        url = f"http://127.0.0.1:{line['ui_port']}/"
        assert line["message"] == f"status page: {url}"
        page = requests.get(url, timeout=30)
        assert page.status_code == 200
        assert f"IMPORTADAPTER on port {process.port}" in page.text

        second = IngestProcess(tmp_path / "two", dicomweb, "--ui_port", str(line["ui_port"]))
        try:
            assert second.process.wait(60) == 3  # a port in use, like the other ports
            wait_until(lambda: "already in use" in second.output(), 10, "the error line")
            assert f"--ui_port {line['ui_port']}: address already in use" in second.output()
        finally:
            second.stop()
    finally:
        process.stop()


def test_no_page_without_ui_port(tmp_path: Path) -> None:
    process = IngestProcess(tmp_path, f"http://127.0.0.1:{refusing_port()}/dicom-web")
    try:
        process.wait_ready()
        assert "status page" not in process.output()
    finally:
        process.stop()
