"""Log lines: JSON with severity for Cloud Logging, readable text otherwise, extras kept."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from support.logstate import preserved_logging

from ingest.contracts import logs
from ingest.contracts.logs import JsonFormatter, TextFormatter


def record(level: int, message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("receiver.handlers", level, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_severity_and_identifiers() -> None:
    line = JsonFormatter().format(
        record(logging.WARNING, "instance refused", sop_instance_uid="1.2.3", status="0xA900")
    )
    entry = json.loads(line)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "instance refused"
    assert entry["sop_instance_uid"] == "1.2.3"
    assert entry["status"] == "0xA900"
    assert entry["logger"] == "receiver.handlers"


def test_text_lines_are_readable_with_extras() -> None:
    line = TextFormatter().format(record(logging.INFO, "association released", instances=3))
    assert "INFO" in line and "association released" in line and "instances=3" in line


def test_exceptions_go_into_stack_trace() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record(logging.ERROR, "failed")
        rec.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["severity"] == "ERROR" and "ValueError: boom" in entry["stack_trace"]


@contextlib.contextmanager
def configured(fmt: str = "json") -> Iterator[None]:
    """``logs.configure`` for the span of a block, every warning shown, all put back after."""
    with warnings.catch_warnings(), preserved_logging():
        warnings.simplefilter("always")
        logs.configure(fmt)
        yield


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines, "nothing was written"
    return [json.loads(line) for line in lines]


def test_a_logged_traceback_is_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    with configured():
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("receiver.handlers").exception("store failed")
    [entry] = json_lines(capsys.readouterr().err)
    assert entry["severity"] == "ERROR" and entry["message"] == "store failed"
    assert entry["stack_trace"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom" in entry["stack_trace"]


def test_a_library_warning_is_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    with configured():
        warnings.warn("this call is deprecated", UserWarning, stacklevel=1)
    [entry] = json_lines(capsys.readouterr().err)
    assert entry["severity"] == "WARNING" and entry["logger"] == "py.warnings"
    assert "UserWarning: this call is deprecated" in entry["message"]


def test_an_exception_in_a_thread_is_one_json_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail() -> None:
        raise RuntimeError("worker died")

    with configured():
        thread = threading.Thread(target=fail, name="upload-3")
        thread.start()
        thread.join()
    [entry] = json_lines(capsys.readouterr().err)
    assert entry["severity"] == "ERROR" and entry["thread_name"] == "upload-3"
    assert "RuntimeError: worker died" in entry["stack_trace"]


def test_an_uncaught_exception_in_the_main_thread_is_one_json_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with configured():
        try:
            raise KeyError("missing")
        except KeyError:
            sys.excepthook(*sys.exc_info())  # what the interpreter calls as it ends
    [entry] = json_lines(capsys.readouterr().err)
    assert entry["severity"] == "ERROR" and "KeyError: 'missing'" in entry["stack_trace"]


def test_an_exception_python_can_only_ignore_is_one_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Leaky:
        def __del__(self) -> None:
            raise OSError("close failed")

    with configured():
        Leaky()
        gc.collect()
    [entry] = json_lines(capsys.readouterr().err)
    assert entry["severity"] == "WARNING" and "OSError: close failed" in entry["stack_trace"]


def test_library_loggers_write_through_the_root_handler(
    capsys: pytest.CaptureFixture[str],
) -> None:
    library = logging.getLogger("pydicom")
    own = logging.StreamHandler(sys.stderr)
    library.addHandler(own)
    try:
        with configured():
            library.warning("invalid value for VR UI")
            logging.getLogger("urllib3.connectionpool").warning("retrying")
        entries = json_lines(capsys.readouterr().err)
    finally:
        library.removeHandler(own)
    assert [e["logger"] for e in entries] == ["pydicom", "urllib3.connectionpool"]
    assert own not in library.handlers


def test_a_record_that_cannot_be_formatted_is_still_one_json_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with configured():
        logging.getLogger("receiver").info("%d instances", "three")
    [entry] = json_lines(capsys.readouterr().err)
    assert entry["severity"] == "ERROR" and entry["failed_logger"] == "receiver"


def test_text_format_keeps_tracebacks_readable(capsys: pytest.CaptureFixture[str]) -> None:
    with configured("text"):
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("receiver").exception("store failed")
        warnings.warn("old call", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert "ERROR   receiver: store failed\nTraceback (most recent call last):" in err
    assert "ValueError: boom" in err and "WARNING py.warnings" in err
