"""Log lines: JSON with severity for Cloud Logging, readable text otherwise, extras kept."""

from __future__ import annotations

import json
import logging
import sys

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
