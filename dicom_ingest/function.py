"""The uploader as a function: ``functions-framework --target=upload`` (Cloud Run, Functions).

Configuration comes from the environment (``DICOM_INGEST_DICOMWEB_ADDRESS``,
``DICOM_INGEST_AUTH=adc``, ``DICOM_INGEST_DEAD_LETTER_TOPIC`` …), read once, on the first
request; the clients built then serve every request of this instance.
"""

from __future__ import annotations

import argparse
import threading

import flask
import functions_framework
from cloudevents.http import CloudEvent

from dicom_ingest.wiring import build_pubsub_handler
from ingest.contracts import logs
from ingest.contracts.settings import resolve, with_defaults
from uploader.config import CLOUD_FLAGS as UPLOADER_CLOUD_FLAGS
from uploader.config import PubSubConfig, UploaderConfig
from uploader.push import PushApp
from uploader.push_auth import PushVerifier, make_request

CLOUD_FLAGS = (*UPLOADER_CLOUD_FLAGS, *with_defaults(logs.FLAGS, log_format="json"))

_lock = threading.Lock()
_built: list[PushApp] = []


def build_app() -> PushApp:
    """The app for this process, from the environment."""
    values = resolve(CLOUD_FLAGS, argparse.Namespace())
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


def _app() -> PushApp:
    with _lock:
        if not _built:
            _built.append(build_app())
        return _built[0]


@functions_framework.cloud_event
def upload(event: CloudEvent) -> None:
    _app().handle(event.data, flask.request)
