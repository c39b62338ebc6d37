"""The one table from a STOW-RS response to what happens to each message.

``classify`` is pure: HTTP status, parsed JSON body and the SOP Instance UIDs sent, in; one
``Outcome`` per instance, out. PS3.18 §10.5.3 defines the statuses and Failure Reasons.
"""

from __future__ import annotations

import re
from typing import Any

from ingest.contracts.outcome import Action, Outcome, http_outcome, retryable_status

REFERENCED_SOP_SEQUENCE = "00081199"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
ERROR_COMMENT = "00000902"

_REASON_TEXT_LIMIT = 300

# Failure Reasons that say "this instance already exists with other content". The Cloud
# Healthcare API answers such a store with HTTP 409 and Failure Reason 0x0110; other servers
# use 0x0111 or 45070 (0xB00E).
_DUPLICATE_REASONS = frozenset({0x0111, 0xB00E})


def failure_reason_outcome(code: int, http_status: int, detail: str = "") -> Outcome:
    """One Failure Reason code (of a FailedSOPSequence item) to an outcome."""
    suffix = f": {detail}" if detail else ""
    if code in _DUPLICATE_REASONS or (http_status == 409 and code == 0x0110):
        return Outcome(Action.CONFLICT, f"instance exists with different content{suffix}")
    if 0xA700 <= code <= 0xA7FF:
        return Outcome(Action.RETRY, f"store out of resources (0x{code:04X}){suffix}")
    if code == 0x0110:
        return Outcome(Action.RETRY, f"processing failure (0x0110){suffix}")
    if 0xA900 <= code <= 0xA9FF:
        return Outcome(Action.DEAD, f"data set does not match SOP class (0x{code:04X}){suffix}")
    if code == 0x0122:
        return Outcome(Action.DEAD, f"SOP class not supported (0x0122){suffix}")
    if code == 0xC122:
        return Outcome(Action.DEAD, f"transfer syntax not supported (0xC122){suffix}")
    if 0xC000 <= code <= 0xCFFF:
        return Outcome(Action.DEAD, f"store cannot understand the instance (0x{code:04X}){suffix}")
    return Outcome(Action.DEAD, f"failure reason 0x{code:04X}{suffix}")


# Warning Reasons (0008,1196) of a ReferencedSOPSequence item, PS3.18 §10.5.3 after PS3.4
# Annex B: stored, but not byte for byte as sent. Settled as done, with the warning as the
# reason, so it is logged rather than settled silently.
_WARNING_REASONS = {
    0xB000: "coercion of data elements",
    0xB006: "elements discarded",
    0xB007: "data set does not match SOP class",
}


def warning_reason_outcome(code: int) -> Outcome:
    """A stored instance's Warning Reason to an outcome.

    A duplicate code as a warning says the store kept the version it had: a conflict, for
    the ``--conflict`` policy, never settled as stored. Any other warning is stored with it.
    """
    if code in _DUPLICATE_REASONS:
        return Outcome(
            Action.CONFLICT, f"Warning Reason 0x{code:04X}: the store kept the version it held"
        )
    meaning = _WARNING_REASONS.get(code, "a warning of the store's own")
    return Outcome(Action.DONE, f"stored with Warning Reason 0x{code:04X} ({meaning})")


def status_outcome(http_status: int, text: str) -> Outcome:
    """The outcome of a response that names no instance."""
    return http_outcome(http_status, _clip(text))


# Server text goes into dead-letter reasons and logs. A store that quotes element values in
# its errors could put patient data there: text that names a patient attribute is withheld
# whole, and anything shaped like a DICOM person name (components joined by ^) is redacted.
_PATIENT_ATTRIBUTE = re.compile(
    r"Patient|PhysicianName|PhysiciansName|OperatorsName|ResponsiblePerson|AccessionNumber"
    r"|\(0010,[0-9A-Fa-f]{4}\)|\b0010[0-9A-Fa-f]{4}\b",
    re.IGNORECASE,
)
_PERSON_NAME = re.compile(r"[^\s\"',;:=()\[\]{}]*\^[^\s\"',;:=()\[\]{}]*")
WITHHELD = "[server text withheld: it names a patient attribute]"


def redact(text: str) -> str:
    """Server text safe for logs and dead-letter reasons."""
    if _PATIENT_ATTRIBUTE.search(text):
        return WITHHELD
    return _PERSON_NAME.sub("[redacted]", text)


def _clip(text: str) -> str:
    text = redact(" ".join(text.split()))
    return text if len(text) <= _REASON_TEXT_LIMIT else text[: _REASON_TEXT_LIMIT - 1] + "…"


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag)
    if not isinstance(element, dict):
        return []
    values = element.get("Value")
    return values if isinstance(values, list) else []


def _items(body: Any, tag: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return [item for item in _values(body, tag) if isinstance(item, dict)]


def _detail(item: dict[str, Any]) -> str:
    texts = [str(v) for v in _values(item, ERROR_COMMENT)]
    for key, element in item.items():  # private FailureDetail, e.g. (0009,0097) GOOGLE
        if key.startswith("0009") and isinstance(element, dict):
            texts += [str(v) for v in element.get("Value", []) if isinstance(v, str)]
    return _clip("; ".join(texts))


def classify(
    http_status: int, body: Any, text: str, sop_instance_uids: list[str]
) -> dict[str, Outcome]:
    """Outcome per SOP Instance UID sent in one STOW-RS request."""
    stored: dict[str, Outcome] = {}
    for item in _items(body, REFERENCED_SOP_SEQUENCE):
        warnings = _values(item, WARNING_REASON)
        outcome = Outcome(Action.DONE)
        if warnings and isinstance(warnings[0], int):
            outcome = warning_reason_outcome(warnings[0])
        for uid in _values(item, REFERENCED_SOP_INSTANCE_UID):
            stored[str(uid)] = outcome
    failed: dict[str, Outcome] = {}
    for item in _items(body, FAILED_SOP_SEQUENCE):
        uids = _values(item, REFERENCED_SOP_INSTANCE_UID)
        reasons = _values(item, FAILURE_REASON)
        code = int(reasons[0]) if reasons and isinstance(reasons[0], int) else 0x0110
        for uid in uids:
            failed[str(uid)] = failure_reason_outcome(code, http_status, _detail(item))

    outcomes: dict[str, Outcome] = {}
    batch = len(sop_instance_uids) > 1
    for uid in sop_instance_uids:
        if uid in failed:
            outcomes[uid] = failed[uid]
        elif uid in stored:
            outcomes[uid] = stored[uid]
        elif 200 <= http_status < 300:
            # PS3.18 says a 200 means every instance was stored, but a 2xx that does not name
            # the instance may come from something else at that address (a proxy, a login
            # page). Only a ReferencedSOPSequence entry counts as stored.
            outcomes[uid] = Outcome(
                Action.RETRY, f"HTTP {http_status} without a result for this instance"
            )
        elif batch and not retryable_status(http_status):
            outcomes[uid] = Outcome(Action.SPLIT, f"HTTP {http_status} for the batch")
        else:
            outcomes[uid] = status_outcome(http_status, text)
    return outcomes
