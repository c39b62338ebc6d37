"""pynetdicom event handlers: one function per event, dependencies bound at registration.

Handlers answer with DIMSE statuses and never raise. Per-association figures (instances,
bytes, failures) are kept on an ``AssociationLog`` and written as one line when the
connection closes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from .config import HEALTH_CHECK_AE
from .store import Status, StoreRequest, StoreService

log = logging.getLogger(__name__)

_COMMENT_MAX = 64  # ErrorComment is LO


@dataclass
class AssociationStats:
    peer: str
    calling_ae: str = ""
    called_ae: str = ""
    started: float = field(default_factory=time.monotonic)
    instances: int = 0
    failed: int = 0
    bytes: int = 0
    rejected: bool = False


class AssociationLog:
    """Per-association counters and the closing log line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[int, AssociationStats] = {}

    def get(self, assoc: Any, create: bool = True) -> AssociationStats:
        """The association's counters; a detached object once the connection has closed."""
        with self._lock:
            stats = self._stats.get(id(assoc))
            if stats is None:
                address = assoc.requestor.address
                stats = AssociationStats(peer=f"{address}:{assoc.requestor.port}")
                if create:
                    self._stats[id(assoc)] = stats
            return stats

    def pop(self, assoc: Any) -> AssociationStats | None:
        with self._lock:
            return self._stats.pop(id(assoc), None)


def _status(result_status: Status, comment: str) -> Dataset:
    response = Dataset()
    response.Status = int(result_status)
    if comment:
        response.ErrorComment = comment[:_COMMENT_MAX]
    return response


def handle_echo(event: Any) -> int:
    return 0x0000


def handle_store(event: Any, service: StoreService, associations: AssociationLog) -> Dataset:
    """EVT_C_STORE with chunked receive: the dataset is in a file at ``event.dataset_path``."""
    stats = associations.get(event.assoc, create=False)
    path: Path | None = None
    try:
        request = event.request
        path = Path(event.dataset_path)
        store_request = StoreRequest(
            sop_class_uid=str(request.AffectedSOPClassUID),
            sop_instance_uid=str(request.AffectedSOPInstanceUID),
            transfer_syntax_uid=str(event.context.transfer_syntax),
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            called_ae=str(event.assoc.acceptor.ae_title).strip(),
        )
        result = service.store(store_request, path)
    except Exception:
        log.exception("C-STORE handler failed")
        stats.failed += 1
        return _status(Status.PROCESSING_FAILURE, "Internal error; retry later")
    finally:
        if path is not None:
            path.unlink(missing_ok=True)
    if result.ok:
        stats.instances += 1
        stats.bytes += result.size
        log.debug(
            "stored instance",
            extra={
                "sop_instance_uid": store_request.sop_instance_uid,
                "message_id": result.message_id,
            },
        )
        return _status(Status.SUCCESS, "")
    stats.failed += 1
    log.warning(
        "instance refused",
        extra={
            "sop_instance_uid": store_request.sop_instance_uid,
            "sop_class_uid": store_request.sop_class_uid,
            "status": f"0x{int(result.status):04X}",
            "reason": result.comment,
            "calling_ae": store_request.calling_ae,
        },
    )
    return _status(result.status, result.comment)


def handle_established(event: Any, associations: AssociationLog) -> None:
    stats = associations.get(event.assoc)
    stats.calling_ae = str(event.assoc.requestor.ae_title).strip()
    stats.called_ae = str(event.assoc.acceptor.ae_title).strip()


def handle_rejected(event: Any, associations: AssociationLog) -> None:
    stats = associations.get(event.assoc)
    stats.rejected = True
    primitive = event.assoc.requestor.primitive
    if primitive is not None:
        stats.calling_ae = str(primitive.calling_ae_title).strip()
        stats.called_ae = str(primitive.called_ae_title).strip()


def handle_conn_close(event: Any, associations: AssociationLog) -> None:
    assoc = event.assoc
    _remove_partial_dataset(assoc)
    stats = associations.pop(assoc)
    if stats is None:
        return
    if stats.rejected:
        outcome = "rejected"
    elif assoc.is_released:
        outcome = "released"
    elif assoc.is_aborted:
        outcome = "aborted"
    else:
        outcome = "closed"
    level = logging.INFO if outcome == "released" and not stats.failed else logging.WARNING
    if stats.calling_ae == HEALTH_CHECK_AE and outcome == "released":
        level = logging.DEBUG  # the readiness probe, every few seconds
    log.log(
        level,
        "association %s: %d stored, %d failed, %d bytes",
        outcome,
        stats.instances,
        stats.failed,
        stats.bytes,
        extra={
            "peer": stats.peer,
            "calling_ae": stats.calling_ae,
            "called_ae": stats.called_ae,
            "instances": stats.instances,
            "failed": stats.failed,
            "bytes": stats.bytes,
            "outcome": outcome,
            "seconds": round(time.monotonic() - stats.started, 3),
        },
    )


def _remove_partial_dataset(assoc: Any) -> None:
    """Delete the chunked-receive file of a transfer cut off mid-dataset (an abort)."""
    message = getattr(getattr(assoc, "dimse", None), "message", None)
    handle = getattr(message, "_data_set_file", None)
    path = getattr(message, "_data_set_path", None)
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()
    if path is not None:
        Path(path).unlink(missing_ok=True)
