"""The uploader as a function: ``functions-framework --target=upload`` (Cloud Run, Functions).

Configuration comes from the environment (``DICOM_INGEST_DICOMWEB_ADDRESS``,
``DICOM_INGEST_AUTH=adc``, ``DICOM_INGEST_DEAD_LETTER_TOPIC`` …). This module is the
function's entry point, its ``main``: it reads the environment and builds the clients once,
when functions-framework loads it, so a bad deployment fails its start with the reason
instead of answering every request with a 500. The clients then serve every request.

functions-framework loads this module inside its Flask app's context and parses each request's
body before it calls ``upload``; so the module puts ``PushGate`` in front of that app's WSGI
callable, where the push token and the body size are checked before the body is read.
"""

from __future__ import annotations

import argparse
import logging

import flask
import functions_framework
from cloudevents.http import CloudEvent

from ingest.contracts import logs
from ingest.contracts.settings import ConfigError, resolve
from uploader.push import PushApp, PushGate

from .wiring import FUNCTION_FLAGS, build_push_app

log = logging.getLogger(__name__)


class FunctionConfigError(ConfigError):
    """The function's environment is invalid: the instance does not start."""


def _start() -> PushApp:
    """Settings from the environment, logging set up once, the app built; or a failed start."""
    try:
        log_settings = resolve(logs.FLAGS, argparse.Namespace())
        logs.configure(log_settings["log_format"], log_settings["verbose"])
        return build_push_app(resolve(FUNCTION_FLAGS, argparse.Namespace()))
    except ConfigError as exc:
        log.critical("the uploader cannot start: %s", exc)
        raise FunctionConfigError(f"the uploader cannot start: {exc}") from exc


def _guard(app: PushApp) -> None:
    """``PushGate`` in front of the functions-framework app that is loading this module."""
    if not flask.has_app_context():  # imported, not served: nothing to guard
        return
    served = flask.current_app
    served.wsgi_app = PushGate(served.wsgi_app, app)  # type: ignore[method-assign]


APP = _start()
_guard(APP)


@functions_framework.cloud_event
def upload(event: CloudEvent) -> None:
    APP.handle(event.data, flask.request)
