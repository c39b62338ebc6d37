"""The uploader as a function: ``functions-framework --target=upload`` (Cloud Run, Functions).

Configuration comes from the environment (``DICOM_INGEST_DICOMWEB_ADDRESS``,
``DICOM_INGEST_AUTH=adc``, ``DICOM_INGEST_DEAD_LETTER_TOPIC`` …). This module is the
function's entry point, its ``main``: it reads the environment and builds the clients once,
when functions-framework loads it, so a bad deployment fails its start with the reason
instead of answering every request with a 500. The clients then serve every request.
"""

from __future__ import annotations

import argparse
import logging

import flask
import functions_framework
from cloudevents.http import CloudEvent

from ingest.contracts import logs
from ingest.contracts.settings import ConfigError, resolve
from uploader.push import PushApp

from .wiring import FUNCTION_FLAGS, build_push_app

log = logging.getLogger(__name__)


class FunctionConfigError(ConfigError):
    """The function's environment is invalid: the instance does not start."""


def _start() -> PushApp:
    """Settings from the environment, logging set up once, the app built; or a failed start."""
    try:
        values = resolve(FUNCTION_FLAGS, argparse.Namespace())
        logs.configure(values["log_format"], values["verbose"])
        return build_push_app(values)
    except ConfigError as exc:
        log.critical("the uploader cannot start: %s", exc)
        raise FunctionConfigError(f"the uploader cannot start: {exc}") from exc


APP = _start()


@functions_framework.cloud_event
def upload(event: CloudEvent) -> None:
    APP.handle(event.data, flask.request)
