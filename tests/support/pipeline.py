"""An in-process local pipeline on an OS-chosen port, for integration tests."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from dicom_ingest.local import LocalConfig, LocalPipeline
from ingest.contracts.settings import declared
from receiver.config import ReceiverConfig
from uploader.config import UploaderConfig


def make_config(spool: Path, dicomweb: str, **overrides: Any) -> LocalConfig:
    status_page = overrides.pop("status_page", None)
    receiver_fields = {f.name for f in dataclasses.fields(ReceiverConfig)}
    local_fields = {name for name, _, _ in declared(LocalConfig)}
    receiver_args = {k: v for k, v in overrides.items() if k in receiver_fields}
    local_args = {k: v for k, v in overrides.items() if k in local_fields}
    uploader_args = {
        k: v for k, v in overrides.items() if k not in receiver_fields and k not in local_fields
    }
    receiver = ReceiverConfig(
        **{"dimse_port": 0, "dimse_bind": "127.0.0.1", "shutdown_grace": 5.0, **receiver_args}
    )
    uploader = UploaderConfig(
        **{
            "dicomweb_address": dicomweb,
            "min_backoff": 0.05,
            "max_backoff": 0.2,
            "http_timeout": 10.0,
            "upload_workers": 2,
            **uploader_args,
        }
    )
    # The suite can be run against receive processes: RECEIVE_PROCESSES=2 pytest ...
    local_args.setdefault("receive_processes", int(os.environ.get("RECEIVE_PROCESSES", "1")))
    return LocalConfig(spool, receiver, uploader, status_page, **local_args)


def start_pipeline(spool: Path, dicomweb: str, **overrides: Any) -> LocalPipeline:
    pipeline = LocalPipeline(make_config(spool, dicomweb, **overrides))
    pipeline.start()
    return pipeline


def settled(pipeline: LocalPipeline) -> bool:
    """Nothing waiting, uploading or backing off: every message uploaded or dead-lettered."""
    stats = pipeline.queue.stats()
    return stats.pending + stats.in_flight + stats.retrying == 0
