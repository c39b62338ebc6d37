"""The one line a dead letter leaves: ERROR, its reason, its identifiers; and its count.

Every path that dead-letters a message (the local queue, the Pub/Sub handler) reports it here,
once, so an operator reads every dead letter in the log and alerts can count them. The fields
are UIDs and message ids, never patient data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from . import metrics

REASON_FIELD = "dead_letter_reason"

log = logging.getLogger("dicom_ingest.dead_letters")


def report(message_id: str, reason: str, ids: Mapping[str, str], outcome: str = "dead") -> None:
    """Log and count one dead letter; ``outcome`` is the action that made it (``dead``, or an
    unresolved ``conflict``)."""
    metrics.DEAD_LETTERS.inc()
    log.error(
        "dead letter: %s",
        reason,
        extra={**ids, "message_id": message_id, "outcome": outcome, REASON_FIELD: reason},
    )
