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
from collections.abc import Mapping

import flask
import functions_framework
from cloudevents.http import CloudEvent

from ingest.contracts import logs
from ingest.contracts.settings import ConfigError, resolve, with_defaults
from uploader.config import CLOUD_FLAGS as UPLOADER_CLOUD_FLAGS
from uploader.config import PubSubConfig, UploaderConfig
from uploader.push import PushApp
from uploader.push_auth import PushVerifier, make_request

from .wiring import build_pubsub_handler

CLOUD_FLAGS = (*UPLOADER_CLOUD_FLAGS, *with_defaults(logs.FLAGS, log_format="json"))

log = logging.getLogger(__name__)


class FunctionConfigError(ConfigError):
    """The function's environment is invalid: the instance does not start."""


def build_app(environ: Mapping[str, str] | None = None) -> PushApp:
    """The app for this process, from the environment."""
    values = resolve(CLOUD_FLAGS, argparse.Namespace(), environ)
    logs.configure(values["log_format"], values["verbose"])
    config = UploaderConfig.from_values(values)
    pubsub = PubSubConfig.from_values(values)
    verifier = request = None
    if pubsub.push_audience and pubsub.push_service_account:
        verifier = PushVerifier(
            pubsub.push_audience, pubsub.push_service_account, pubsub.push_certs_url
        )
        request = make_request()
    return PushApp(build_pubsub_handler(config, pubsub), verifier, request)


def _start() -> PushApp:
    try:
        return build_app()
    except ConfigError as exc:
        log.critical("the uploader cannot start: %s", exc)
        raise FunctionConfigError(f"the uploader cannot start: {exc}") from exc


APP = _start()


@functions_framework.cloud_event
def upload(event: CloudEvent) -> None:
    APP.handle(event.data, flask.request)
