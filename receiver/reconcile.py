"""Reconciliation: every stored object has a message, even if the queue lost or never got it.

A power cut after an object is durable but before its message is, a deleted or damaged queue
database, or a publish that failed: each leaves an object without a message. Reconciliation
walks the spool and rebuilds the message of every current object that no message names,
entirely from the object itself (file meta, the dataset's UIDs, size, checksum, time).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.filereader import read_file_meta_info

from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import SqliteQueue, version_key
from ingest.contracts.message import InstanceMessage, encode
from ingest.contracts.ports import StoredObject

from .dataset_scan import part10_dataset_offset, scan_dataset
from .part10 import stream_crc32c

log = logging.getLogger(__name__)


class UnusableObject(ValueError):
    """A stored object from which no message can be rebuilt."""


@dataclass(frozen=True, slots=True)
class SpoolReconcileReport:
    objects: int
    enqueued: int
    unusable: int
    pruned: int


def rebuild_message(stored: StoredObject, path: Path, called_ae: str) -> InstanceMessage:
    """The message the receiver would have published for this object."""
    try:
        meta = read_file_meta_info(path)
        syntax = str(meta.TransferSyntaxUID)
        with open(path, "rb") as handle:
            handle.seek(part10_dataset_offset(handle))
            summary = scan_dataset(handle, syntax)
            handle.seek(0)
            crc32c = stream_crc32c(handle)
        received = datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
        return message_from_meta(
            meta,
            StoredObject(stored.uri, stored.generation, stored.size, crc32c),
            str(summary.study_instance_uid or ""),
            str(summary.series_instance_uid or ""),
            called_ae,
            received,
        )
    except Exception as exc:  # any damage to one object must not stop the others
        raise UnusableObject(f"{type(exc).__name__}: {exc}") from exc


def message_from_meta(
    meta: Any,
    stored: StoredObject,
    study: str,
    series: str,
    called_ae: str,
    received: datetime,
) -> InstanceMessage:
    """The message for a stored object, from its Part-10 file meta and its dataset's UIDs."""
    return InstanceMessage(
        uri=stored.uri,
        generation=stored.generation,
        size=stored.size,
        crc32c=stored.crc32c,
        sop_class_uid=str(meta.MediaStorageSOPClassUID),
        sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
        study_instance_uid=study,
        series_instance_uid=series,
        transfer_syntax_uid=str(meta.TransferSyntaxUID),
        calling_ae=str(meta.get("SourceApplicationEntityTitle", "")).strip(),
        called_ae=called_ae,
        received_at=received.isoformat(timespec="milliseconds"),
    )


def reconcile(
    objects: SpoolObjectStore,
    queue: SqliteQueue,
    called_ae: str,
    prune: bool = False,
    min_age: float = 0.0,
    progress: Callable[[SpoolReconcileReport], None] | None = None,
) -> SpoolReconcileReport:
    """Enqueue a rebuilt message for each current object that no message points at.

    ``prune`` is for the process that owns the spool, before it accepts associations. While
    a pipeline runs, pass ``min_age``: an object younger than that may be between its write
    and its publish (or between its upload's acknowledgement and its removal). ``progress``
    is told the figures so far after each object.
    """
    pruned = objects.prune() if prune else 0
    seen = enqueued = unusable = 0
    now = time.time()
    for stored, path in objects.current_objects():
        if progress is not None and seen:
            progress(SpoolReconcileReport(seen, enqueued, unusable, pruned))
        seen += 1
        message_attributes = {"object_uri": stored.uri, "object_generation": stored.generation}
        key = version_key(message_attributes)
        if key is None or queue.has_object(key):
            continue
        try:
            if min_age and now - path.stat().st_mtime < min_age:
                continue
        except FileNotFoundError:
            continue  # uploaded and removed meanwhile
        try:
            message = rebuild_message(stored, path, called_ae)
        except UnusableObject as exc:
            unusable += 1
            log.error("cannot rebuild a message for %s: %s", stored.uri, exc)
            continue
        if queue.has_object(key):  # published while it was being read
            continue
        message_id = queue.publish(encode(message), message.attributes)
        enqueued += 1
        log.info(
            "re-enqueued an object that had no message",
            extra={"sop_instance_uid": message.sop_instance_uid, "message_id": message_id},
        )
    report = SpoolReconcileReport(seen, enqueued, unusable, pruned)
    if progress is not None and seen:
        progress(report)
    return report
