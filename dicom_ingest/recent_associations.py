"""The last associations, for the status page: copied from the receiver's closing log lines.

The receiver logs one line per association (peer, AE titles, counts, bytes, outcome). A handler
on that logger keeps the fields of the latest lines in a bounded ring buffer, so the receiver
does not know the page exists. Only the named fields are kept, never the message text: AE
titles, addresses, figures and the outcome, no patient data.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import Any

from receiver import association

# The closing line's fields, as receiver/association.py logs them.
_TEXT = ("peer", "calling_ae", "called_ae", "outcome", "transport", "reason", "rejected_contexts")
_NUMBERS = ("instances", "failed", "bytes", "seconds")


@dataclass(frozen=True, slots=True)
class AssociationRecord:
    ended_at: float
    peer: str
    calling_ae: str
    called_ae: str
    outcome: str
    transport: str
    reason: str
    rejected_contexts: str
    instances: int
    failed: int
    bytes: int
    seconds: float


def _record(log: logging.LogRecord) -> AssociationRecord | None:
    fields: dict[str, Any] = vars(log)
    if not all(name in fields for name in ("outcome", "calling_ae", "instances")):
        return None  # another line of that logger, not an association's closing line
    text = {name: str(fields.get(name) or "") for name in _TEXT}
    try:
        numbers = {name: float(fields.get(name) or 0) for name in _NUMBERS}
    except (TypeError, ValueError):
        return None
    return AssociationRecord(
        ended_at=log.created,
        instances=int(numbers["instances"]),
        failed=int(numbers["failed"]),
        bytes=int(numbers["bytes"]),
        seconds=numbers["seconds"],
        **text,
    )


class RecentAssociations(logging.Handler):
    """A ring buffer of the last ``size`` associations; ``attach`` it to the receiver's logger."""

    def __init__(self, size: int = 50) -> None:
        super().__init__(level=logging.INFO)  # not the DEBUG line of each readiness probe
        self._records: collections.deque[AssociationRecord] = collections.deque(maxlen=size)
        self._guard = threading.Lock()
        self._logger = logging.getLogger(association.__name__)

    def attach(self) -> None:
        self._logger.addHandler(self)

    def detach(self) -> None:
        self._logger.removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        kept = _record(record)
        if kept is not None:
            with self._guard:
                self._records.append(kept)

    def latest(self) -> list[AssociationRecord]:
        """Newest first."""
        with self._guard:
            return list(reversed(self._records))
