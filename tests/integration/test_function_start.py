"""The function's configuration is checked when it starts: a bad deployment never serves."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_ingest.wiring import FUNCTION_FLAGS, build_push_app
from ingest.contracts.settings import ConfigError, resolve

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"
ADDRESS = "http://127.0.0.1:9/dicomWeb"  # never asked: the function does not start

BAD_ENVIRONMENTS = {
    "no store address": ({}, "--dicomweb_address is required"),
    "bearer without a token": (
        {
            "DICOM_INGEST_DICOMWEB_ADDRESS": ADDRESS,
            "DICOM_INGEST_AUTH": "bearer",
        },
        "--auth bearer needs --bearer_token",
    ),
    "not a number": (
        {
            "DICOM_INGEST_DICOMWEB_ADDRESS": ADDRESS,
            "DICOM_INGEST_UPLOAD_WORKERS": "many",
        },
        "DICOM_INGEST_UPLOAD_WORKERS",
    ),
    "not a topic": (
        {
            "DICOM_INGEST_DICOMWEB_ADDRESS": ADDRESS,
            "DICOM_INGEST_DEAD_LETTER_TOPIC": "dead-letters",
        },
        "dead_letter_topic",
    ),
}


def _environment(extra: dict[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in os.environ.items() if not k.startswith("DICOM_INGEST_")}
    return {**kept, **extra}


@pytest.mark.parametrize("case", sorted(BAD_ENVIRONMENTS))
def test_a_bad_environment_is_refused_with_its_reason(case: str) -> None:
    environ, reason = BAD_ENVIRONMENTS[case]
    with pytest.raises(ConfigError, match=re.escape(reason)):
        build_push_app(resolve(FUNCTION_FLAGS, argparse.Namespace(), environ))


def test_importing_the_function_with_a_bad_environment_fails() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import dicom_ingest.function"],
        env=_environment({"DICOM_INGEST_AUTH": "bearer"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "FunctionConfigError: the uploader cannot start" in done.stderr
    assert "--dicomweb_address is required" in done.stderr


def test_functions_framework_does_not_start_with_a_bad_environment() -> None:
    """The process ends at start-up with the reason; it never listens."""
    done = subprocess.run(
        [
            str(FUNCTIONS_FRAMEWORK),
            "--source", str(ROOT / "dicom_ingest" / "function.py"),
            "--target", "upload",
            "--signature-type", "cloudevent",
            "--host", "127.0.0.1",
            "--port", "0",
        ],
        env=_environment({"DICOM_INGEST_LOG_FORMAT": "json"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "--dicomweb_address is required" in done.stderr
    assert '"severity": "CRITICAL"' in done.stderr  # a JSON line Cloud Logging shows
