"""What becomes of a queued message: the contract between a service and the queue workers.

A service (the uploader, the receiver's shipper) returns one ``Outcome`` per message; the
workers settle it: acknowledge, retry later or dead-letter with the reason. This module is the
one place that says how: ``POLICY`` per action, ``http_outcome`` for a store's HTTP status and
``error_outcome`` for an exception of the object store or of the transport to the store.
Every queue (the embedded workers, the Pub/Sub handler, replay) settles through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

import requests
from google.auth.exceptions import GoogleAuthError

from .ports import ObjectMissing, ObjectStoreError, ObjectSuperseded


class Action(Enum):
    DONE = "done"  # stored; acknowledge
    RETRY = "retry"  # transient; redeliver later with backoff
    DEAD = "dead"  # permanent; dead-letter with the reason
    CONFLICT = "conflict"  # exists with other content; the --conflict policy decides
    SPLIT = "split"  # the response to a batch does not say; resend this one alone
    SUPERSEDED = "superseded"  # a newer version of the object exists; acknowledge
    SKIPPED = "skipped"  # conflict policy "skip"; acknowledge


class Settle(Enum):
    """What a queue does with a message: exactly one of these per outcome."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    reason: str = ""

    @property
    def settle(self) -> Settle:
        return POLICY[self.action]

    @property
    def acknowledges(self) -> bool:
        return POLICY[self.action] is Settle.ACK

    @property
    def dead_letter_reason(self) -> str:
        """The reason a dead letter carries: never empty."""
        return self.reason or self.action.value


# CONFLICT and SPLIT are decided by the service (the --conflict policy, a resend alone); one
# that reaches a queue unresolved is a permanent failure, dead-lettered with its reason.
POLICY: Mapping[Action, Settle] = MappingProxyType(
    {
        Action.DONE: Settle.ACK,
        Action.SUPERSEDED: Settle.ACK,
        Action.SKIPPED: Settle.ACK,
        Action.RETRY: Settle.RETRY,
        Action.DEAD: Settle.DEAD_LETTER,
        Action.CONFLICT: Settle.DEAD_LETTER,
        Action.SPLIT: Settle.DEAD_LETTER,
    }
)

# HTTP answers worth asking again: request timeout, too many requests, any server error.
RETRYABLE_STATUSES = frozenset({408, 429})


def retryable_status(status: int) -> bool:
    """Whether a store's HTTP status is transient (408, 429, 5xx)."""
    return status in RETRYABLE_STATUSES or status >= 500


def http_outcome(status: int, detail: str = "", what: str = "HTTP") -> Outcome:
    """A store's HTTP status to an outcome: 2xx done, 409 conflict, 408/429/5xx retry,
    anything else (1xx, 3xx, other 4xx) a permanent failure. ``what`` prefixes the reason."""
    reason = f"{what} {status}{': ' + detail if detail else ''}"
    if 200 <= status < 300:
        return Outcome(Action.DONE)
    if status == 409:
        return Outcome(Action.CONFLICT, reason)
    if retryable_status(status):
        return Outcome(Action.RETRY, reason)
    return Outcome(Action.DEAD, reason)


# Failures of the way to a store or an object store that another attempt may not meet:
# connections, timeouts and deadlines (requests' errors are OSErrors), token refreshes.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    GoogleAuthError,
    OSError,
    ObjectStoreError,
)


def error_outcome(exc: BaseException, where: str) -> Outcome:
    """An object store's or a transport's exception to an outcome; ``where`` names the part.

    A superseded object version is acknowledged as superseded, a missing object is permanent,
    every other object store, I/O or transport failure is retried. Anything else is a defect:
    re-raised, for the caller's catch-all to retry with its type in the reason.
    """
    if isinstance(exc, ObjectSuperseded):
        return Outcome(Action.SUPERSEDED, str(exc))
    if isinstance(exc, ObjectMissing):
        return Outcome(Action.DEAD, f"{where}: object missing: {exc}")
    if isinstance(exc, TRANSIENT_ERRORS):
        return Outcome(Action.RETRY, f"{where}: {type(exc).__name__}: {exc}")
    raise exc


def defect_outcome(exc: BaseException) -> Outcome:
    """An unexpected exception around a whole batch: retried, its type in the reason."""
    return Outcome(Action.RETRY, f"{type(exc).__name__}: {exc}")
