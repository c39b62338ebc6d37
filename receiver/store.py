"""Accepting one C-STORE: check, store the Part-10 object, publish, and only then succeed.

This module knows nothing of the network; ``association`` hands each received instance to
``StoreService.store``.
Every failure maps to one row of ``Status`` with a short error comment that names no patient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Protocol

from ingest.contracts.message import InstanceMessage, MessageError, encode, is_valid_uid
from ingest.contracts.ports import ObjectStore, ObjectStoreError, Publisher, StoredObject

from .dataset_scan import (
    LimitExceeded,
    MalformedDataset,
    ScanLimits,
    part10_dataset_offset,
    scan_dataset,
)
from .free_space import disk_full_comment, is_disk_full
from .part10 import stream_crc32c

log = logging.getLogger(__name__)
_SCAN_BUFFER = 64 * 1024
_COMMENT_MAX = 64  # Error Comment (0000,0902) is an LO: at most 64 characters


class Status(IntEnum):
    """C-STORE response statuses (PS3.4 Annex B.2.3) this receiver answers with."""

    SUCCESS = 0x0000
    STORAGE_UNAVAILABLE = 0xA700  # Refused: out of resources (object store write failed)
    QUEUE_UNAVAILABLE = 0xA701  # Refused: out of resources (queue did not accept)
    DATASET_MISMATCH = 0xA900  # Error: data set does not match SOP class / request
    CANNOT_UNDERSTAND = 0xC000  # Error: cannot understand (not DICOM, truncated, over a limit)
    PROCESSING_FAILURE = 0x0110  # an unexpected fault; the PACS may retry


@dataclass(frozen=True, slots=True)
class StoreRequest:
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    calling_ae: str
    called_ae: str


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """An instance as the front door wrote it: a whole Part-10 file, this receiver's file
    meta followed by the dataset's bytes as they arrived, with its size and CRC32C. The
    object store takes it as it is (a rename into the spool, an upload to Cloud Storage):
    each instance is written once."""

    path: Path
    dataset_offset: int
    size: int
    crc32c: str

    @classmethod
    def read(cls, path: Path) -> ReceivedFile:
        """Describe a Part-10 file written by other means (tools, tests)."""
        with open(path, "rb") as source:
            offset = part10_dataset_offset(source)
            source.seek(0)
            crc = stream_crc32c(source)
        return cls(path, offset, path.stat().st_size, crc)


@dataclass(frozen=True, slots=True)
class StoreResult:
    status: Status
    comment: str = ""
    size: int = 0
    message_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCESS


def object_key(study: str, series: str, sop: str) -> str:
    """The object name for an instance; the UIDs are validated, so safe as path parts."""
    for uid in (study, series, sop):
        if not is_valid_uid(uid):
            raise ValueError("object key parts must be valid UIDs")
    return f"{study}/{series}/{sop}.dcm"


class EarlyFinisher(Protocol):
    """Uploads that started while the dataset was arriving (``receiver.early_upload``)."""

    def finish(self, path: Path, dataset_length: int, key: str) -> StoredObject | None: ...

    def cancel(self, path: Path) -> None: ...


class StoreService:
    """Turns a received dataset file into a stored object and a committed message."""

    def __init__(
        self,
        objects: ObjectStore,
        publisher: Publisher,
        early: EarlyFinisher | None = None,
        limits: ScanLimits | None = None,
    ) -> None:
        self._objects = objects
        self._publisher = publisher
        self._early = early
        self._limits = limits or ScanLimits()

    def store(self, request: StoreRequest, received: ReceivedFile) -> StoreResult:
        """Check the received instance, store it, publish its message; the status to answer."""
        try:
            return self._store(request, received)
        except Exception:
            log.exception(
                "unexpected failure storing instance",
                extra={"sop_instance_uid": request.sop_instance_uid},
            )
            return StoreResult(Status.PROCESSING_FAILURE, "Internal error; retry later")
        finally:
            if self._early is not None:  # rejected or failed: an upload under way never lands
                self._early.cancel(received.path)

    def cancel(self, received: Path) -> None:
        """A dataset that will never be stored (cut off or refused while it arrived)."""
        if self._early is not None:
            self._early.cancel(received)

    def _store(self, request: StoreRequest, received: ReceivedFile) -> StoreResult:
        # A buffer that holds a small instance whole: the scan reads it in one go, and its
        # skips over element values stay inside the buffer (no seek, no read of their own).
        with open(received.path, "rb", buffering=_SCAN_BUFFER) as source:
            source.seek(received.dataset_offset)
            try:
                summary = scan_dataset(source, request.transfer_syntax_uid, self._limits)
            except LimitExceeded as exc:
                # A dataset beyond a content limit would poison the DICOM store: refused for
                # good (not a resource shortage the PACS should retry), with the limit named.
                return StoreResult(Status.CANNOT_UNDERSTAND, f"Refused: {exc}"[:_COMMENT_MAX])
            except MalformedDataset as exc:
                return StoreResult(Status.CANNOT_UNDERSTAND, f"Cannot parse dataset: {exc}")
        problem = _mismatch(request, summary.sop_class_uid, summary.sop_instance_uid)
        if problem is None:
            problem = _missing(summary.study_instance_uid, "Study Instance UID")
        if problem is None:
            problem = _missing(summary.series_instance_uid, "Series Instance UID")
        if problem is not None:
            return StoreResult(Status.DATASET_MISMATCH, problem)
        study = str(summary.study_instance_uid)
        series = str(summary.series_instance_uid)
        key = object_key(study, series, request.sop_instance_uid)
        stored = None
        if self._early is not None:
            length = received.size - received.dataset_offset
            try:
                stored = self._early.finish(received.path, length, key)
            except ObjectStoreError as exc:  # stuck: writing again could race it
                log.error("object store write failed: %s", exc)
                return StoreResult(Status.STORAGE_UNAVAILABLE, "Storage unavailable; retry later")
        if stored is None:
            try:
                stored = self._objects.put(key, received.path, received.size, received.crc32c)
            except (OSError, ObjectStoreError) as exc:
                log.error(
                    "object store write failed: %s",
                    exc,
                    extra={"sop_instance_uid": request.sop_instance_uid},
                )
                comment = "Storage unavailable; retry later"
                if isinstance(exc, OSError) and is_disk_full(exc):
                    comment = disk_full_comment(exc)
                return StoreResult(Status.STORAGE_UNAVAILABLE, comment)

        try:
            message = InstanceMessage(
                uri=stored.uri,
                generation=stored.generation,
                size=stored.size,
                crc32c=stored.crc32c,
                sop_class_uid=request.sop_class_uid,
                sop_instance_uid=request.sop_instance_uid,
                study_instance_uid=study,
                series_instance_uid=series,
                transfer_syntax_uid=request.transfer_syntax_uid,
                calling_ae=request.calling_ae,
                called_ae=request.called_ae,
                received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            )
            message_id = self._publisher.publish(encode(message), message.attributes)
        except MessageError as exc:
            self._objects.rollback(stored)
            return StoreResult(Status.DATASET_MISMATCH, f"Invalid identifiers: {exc}")
        except Exception as exc:
            log.error(
                "queue publish failed: %s",
                exc,
                extra={"sop_instance_uid": request.sop_instance_uid},
            )
            # Put the previous version back: its message (if any) must still find its bytes.
            self._objects.rollback(stored)
            return StoreResult(Status.QUEUE_UNAVAILABLE, "Queue unavailable; retry later")
        self._objects.commit(stored)
        return StoreResult(Status.SUCCESS, size=stored.size, message_id=message_id)


def _mismatch(request: StoreRequest, sop_class: str | None, sop_instance: str | None) -> str | None:
    problem = _missing(sop_instance, "SOP Instance UID")
    if problem is not None:
        return problem
    if sop_instance != request.sop_instance_uid:
        return "SOP Instance UID differs from the request"
    if sop_class and sop_class != request.sop_class_uid:
        return "SOP Class UID differs from the request"
    if not is_valid_uid(request.sop_class_uid):
        return "Request has an invalid SOP Class UID"
    return None


def _missing(value: str | None, name: str) -> str | None:
    if not value:
        return f"Dataset lacks {name}"
    if not is_valid_uid(value):
        return f"Dataset has an invalid {name}"
    return None
