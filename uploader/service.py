"""Upload a set of messages: read each named object version, STOW-RS, decide per instance.

The same code serves the embedded workers and the Cloud Run handler: it takes decoded
messages and returns one ``Outcome`` per message; the caller maps outcomes to ack, retry or
dead-letter on its queue.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import BinaryIO

from ingest.adapters.dicomweb import DicomWebClient, DicomWebError
from ingest.contracts.message import InstanceMessage
from ingest.contracts.outcome import (
    TRANSIENT_ERRORS,
    Action,
    Outcome,
    error_outcome,
    http_outcome,
)
from ingest.contracts.ports import (
    HeldVersion,
    ObjectMissing,
    ObjectStore,
    ObjectStoreError,
    StoreLedger,
)
from uploader.stow_outcome import classify

log = logging.getLogger(__name__)

CONFLICT_POLICIES = ("fail", "overwrite", "skip")
# How the reason of a correction (an instance delivered before, sent again with other bytes)
# begins; whatever ``--conflict`` decided, it is logged as one WARNING line.
CORRECTION = "correction: "
# The store could not say whether it holds an instance: unreachable, or an answer not understood.
_CANNOT_ASK: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, DicomWebError, ValueError)


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_instances: int = 16
    max_bytes: int = 64 << 20


class UploadService:
    def __init__(
        self,
        objects: ObjectStore,
        client: DicomWebClient,
        conflict: str = "fail",
        limits: BatchLimits = BatchLimits(),
        delete_uploaded: bool = False,
        ledger: StoreLedger | None = None,
    ) -> None:
        if conflict not in CONFLICT_POLICIES:
            raise ValueError(f"conflict policy must be one of {CONFLICT_POLICIES}")
        self._objects = objects
        self._client = client
        self._conflict = conflict
        self._limits = limits
        self._delete_uploaded = delete_uploaded
        self._ledger = ledger

    def process(self, messages: list[InstanceMessage]) -> list[Outcome]:
        """One outcome per message, in order. Never raises for a per-message problem."""
        outcomes: dict[int, Outcome] = {}
        for batch in self._batches(list(enumerate(messages))):
            outcomes.update(self._upload_batch(batch))
        for index, message in enumerate(messages):
            _log_outcome(message, outcomes[index])
        return [outcomes[i] for i in range(len(messages))]

    def finish(self, message: InstanceMessage, outcome: Outcome) -> None:
        """After the message is acknowledged: drop its object if it is no longer needed.

        Called only once the acknowledgement is durable, so a crash in between leaves an
        object behind rather than a message whose object is gone.
        """
        # Stored, or the store already holds it: the object is no longer needed. A superseded
        # version is the receiver's to replace, not ours to remove.
        if not self._delete_uploaded or outcome.action not in (Action.DONE, Action.SKIPPED):
            return
        try:
            self._objects.delete(message.uri, message.generation)
        except Exception:  # the object stays; a lifecycle rule or the next run removes it
            log.warning("could not delete uploaded object", extra=message.log_ids)

    def _batches(
        self, items: list[tuple[int, InstanceMessage]]
    ) -> Iterator[list[tuple[int, InstanceMessage]]]:
        by_study: dict[str, list[tuple[int, InstanceMessage]]] = defaultdict(list)
        for item in items:
            by_study[item[1].study_instance_uid].append(item)
        for group in by_study.values():
            batch: list[tuple[int, InstanceMessage]] = []
            size = 0
            for item in group:
                if batch and (
                    len(batch) >= self._limits.max_instances
                    or size + item[1].size > self._limits.max_bytes
                ):
                    yield batch
                    batch, size = [], 0
                batch.append(item)
                size += item[1].size
            if batch:
                yield batch

    def _open(self, message: InstanceMessage, stack: ExitStack) -> BinaryIO | Outcome:
        try:
            handle = stack.enter_context(self._objects.open(message.uri, message.generation))
        except ObjectMissing as exc:
            return self._missing(message, exc)
        except (OSError, ObjectStoreError) as exc:
            return error_outcome(exc, "object store")
        actual = _object_size(handle, message.size)
        if actual != message.size:
            return Outcome(Action.DEAD, f"object is {actual} bytes, message says {message.size}")
        crc32c = getattr(handle, "crc32c", None)
        if crc32c and crc32c != message.crc32c:
            return Outcome(Action.DEAD, "object checksum differs from the message's")
        return handle

    def _missing(self, message: InstanceMessage, exc: ObjectMissing) -> Outcome:
        """An object removed after its upload (a redelivery after a crash between removal and
        acknowledgement) is no failure when the store has the instance."""
        try:
            present = self._client.has_instance(
                message.study_instance_uid, message.series_instance_uid, message.sop_instance_uid
            )
        except _CANNOT_ASK as err:
            reason = f"object missing: {exc}; the DICOM store could not be asked ({err})"
            return Outcome(Action.DEAD, reason)
        if present:
            return Outcome(Action.SKIPPED, "object already removed; the DICOM store has it")
        return Outcome(Action.DEAD, f"object missing: {exc}")

    def _upload_batch(self, batch: list[tuple[int, InstanceMessage]]) -> dict[int, Outcome]:
        results: dict[int, Outcome] = {}
        corrections: list[tuple[int, InstanceMessage, HeldVersion]] = []
        with ExitStack() as stack:
            ready: list[tuple[int, InstanceMessage, BinaryIO]] = []
            for index, message in batch:
                opened = self._open(message, stack)
                if isinstance(opened, Outcome):
                    results[index] = opened
                elif (held := self._correcting(message)) is not None:
                    corrections.append((index, message, held))
                else:
                    ready.append((index, message, opened))
            per_uid: dict[str, Outcome] = {}
            if ready:
                study = ready[0][1].study_instance_uid
                parts = [(handle, message.size) for _, message, handle in ready]
                uids = [message.sop_instance_uid for _, message, _ in ready]
                per_uid = self._stow(study, parts, uids)
        for index, message, _ in ready:
            outcome = per_uid[message.sop_instance_uid]
            if outcome.action is Action.SPLIT:
                outcome = self._single(message)
            elif outcome.action is Action.CONFLICT:
                outcome = self._store_refused(message, outcome)
            else:
                self._delivered(message, outcome)
            results[index] = outcome
        for index, message, held in corrections:
            detail = f"CRC32C {message.crc32c}, the store holds {held.crc32c}"
            results[index] = self._decide(message, detail)
        return results

    def _correcting(self, message: InstanceMessage) -> HeldVersion | None:
        """The version the store holds, when this message would replace it with other bytes."""
        if self._ledger is None:
            return None
        held = self._ledger.held_version(message.sop_instance_uid)
        if held is None or held.crc32c == message.crc32c:
            return None  # never delivered, or a plain resend of the same bytes
        return held

    def _delivered(self, message: InstanceMessage, outcome: Outcome) -> None:
        """Remember what the store now holds, once it said so."""
        if self._ledger is not None and outcome.action is Action.DONE:
            self._ledger.record_held(message.sop_instance_uid, message.crc32c)

    def _stow(
        self, study: str, parts: list[tuple[BinaryIO, int]], uids: list[str]
    ) -> dict[str, Outcome]:
        try:
            response = self._client.stow(study, parts)
        except TRANSIENT_ERRORS as exc:
            outcome = error_outcome(exc, "STOW-RS")
            return dict.fromkeys(uids, outcome)
        return classify(response.status, response.body, response.text, uids)

    def _stow_one(self, message: InstanceMessage) -> Outcome:
        """Open the message's object again and store it on its own."""
        with ExitStack() as stack:
            opened = self._open(message, stack)
            if isinstance(opened, Outcome):
                return opened
            return self._stow(
                message.study_instance_uid, [(opened, message.size)], [message.sop_instance_uid]
            )[message.sop_instance_uid]

    def _single(self, message: InstanceMessage) -> Outcome:
        outcome = self._stow_one(message)
        if outcome.action is Action.CONFLICT:
            return self._store_refused(message, outcome)
        self._delivered(message, outcome)
        return outcome

    def _store_refused(self, message: InstanceMessage, outcome: Outcome) -> Outcome:
        """The store says it holds other content (a 409, a duplicate Failure or Warning
        Reason): a correction the ledger did not know of (the cloud has no ledger)."""
        return self._decide(message, f"CRC32C {message.crc32c}; the store: {outcome.reason}")

    def _decide(self, message: InstanceMessage, detail: str) -> Outcome:
        """A correction: ``--conflict`` decides; the reason names UIDs and checksums only."""
        what = (
            f"{CORRECTION}SOP instance {message.sop_instance_uid} received again with"
            f" different content ({detail})"
        )
        if self._conflict == "skip":
            return Outcome(Action.SKIPPED, f"{what}; --conflict skip keeps the stored version")
        if self._conflict == "fail":
            return Outcome(Action.DEAD, f"{what}; --conflict fail keeps the stored version")
        replaced = self._overwrite(message)
        if replaced.action is Action.DONE:
            return Outcome(Action.DONE, f"{what}; --conflict overwrite stored the new version")
        return replaced

    def _overwrite(self, message: InstanceMessage) -> Outcome:
        """DELETE the stored version, then STOW-RS this one alone."""
        try:
            status = self._client.delete_instance(
                message.study_instance_uid, message.series_instance_uid, message.sop_instance_uid
            )
        except TRANSIENT_ERRORS as exc:
            return error_outcome(exc, "overwrite: delete")
        except DicomWebError as exc:
            return Outcome(Action.DEAD, f"overwrite: delete: {exc}")
        if status != 404:  # 404: nothing to delete
            deleted = http_outcome(status, what="overwrite: delete answered HTTP")
            if deleted.action is Action.CONFLICT:  # a 409 to a DELETE is no conflict of ours
                return Outcome(Action.DEAD, deleted.reason)
            if status == 405:
                hint = (
                    "the store does not delete through DICOMweb (Orthanc: --orthanc_rest_address)"
                )
                return Outcome(Action.DEAD, f"{deleted.reason}; {hint}")
            if deleted.action is not Action.DONE:
                return deleted
        again = self._stow_one(message)
        if again.action is Action.CONFLICT:
            return Outcome(Action.RETRY, f"overwrite: still conflicting: {again.reason}")
        self._delivered(message, again)
        return again


def _object_size(handle: BinaryIO, default: int) -> int:
    """The size a store reports for an open object (``size``), or its file's size."""
    size = getattr(handle, "size", None)
    if isinstance(size, int):
        return size
    try:
        return os.fstat(handle.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        return default


def _log_outcome(message: InstanceMessage, outcome: Outcome) -> None:
    if outcome.action is Action.DONE and not outcome.reason:
        log.debug("uploaded", extra=message.log_ids)
        return
    level = logging.ERROR if outcome.action is Action.DEAD else logging.WARNING
    if outcome.action in (Action.SUPERSEDED, Action.SKIPPED):
        level = logging.INFO
    if outcome.reason.startswith(CORRECTION):  # a decision, whichever it was
        level = logging.WARNING
    log.log(
        level,
        "instance %s: %s",
        outcome.action.value,
        outcome.reason,
        extra={**message.log_ids, "outcome": outcome.action.value},
    )
