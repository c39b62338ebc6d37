"""What becomes of a queued message: the contract between a service and the queue workers.

A service (the uploader, the receiver's shipper) returns one ``Outcome`` per message; the
workers settle it: acknowledge, retry later or dead-letter with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    DONE = "done"  # stored; acknowledge
    RETRY = "retry"  # transient; redeliver later with backoff
    DEAD = "dead"  # permanent; dead-letter with the reason
    CONFLICT = "conflict"  # exists with other content; the --conflict policy decides
    SPLIT = "split"  # the response to a batch does not say; resend this one alone
    SUPERSEDED = "superseded"  # a newer version of the object exists; acknowledge
    SKIPPED = "skipped"  # conflict policy "skip"; acknowledge


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    reason: str = ""
