"""Bring Pub/Sub backlogs back into the pipeline: drain, seek, and bucket reconciliation.

- ``drain`` pulls a subscription (usually the dead-letter one) and either re-publishes each
  message to the main topic or uploads it directly. A message is acknowledged only after
  its re-publish was accepted or its upload settled; the others are released at the end,
  still in the subscription.
- ``seek`` rewinds a subscription to a time or snapshot; Pub/Sub redelivers what it kept.
- ``reconcile_bucket`` finds objects the DICOM store lacks (QIDO-RS per study) and
  publishes their messages: the recovery for a crash between an object's write and its
  message's publish.
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from google.api_core import exceptions as api_exceptions
from pydicom.filereader import read_file_meta_info

from ingest.contracts.message import InstanceMessage, decode, encode, is_valid_uid
from ingest.contracts.outcome import Action
from ingest.contracts.ports import Publisher, StoredObject
from receiver.reconcile import message_from_meta
from uploader.pubsub_handler import (
    DEAD_LETTER_ATTRIBUTES,
    Decision,
    Handled,
    PubSubHandler,
    Received,
)

log = logging.getLogger(__name__)

PULL_BATCH = 100
EMPTY_PULLS = 2  # a pull may come back empty while messages remain; stop after two
LEASE_SECONDS = 600
_META_PROBE = 64 << 10  # the file meta of a Part-10 object fits in its first 64 KiB


def parse_time(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; a time without a zone is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not a time: {text!r} (use e.g. 2026-11-24T10:00:00Z)") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.done + self.failed + self.skipped

    def count(self, result: str, reason: str = "") -> None:
        if result == "done":
            self.done += 1
        elif result == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
            key = reason[:120] or result
            self.reasons[key] = self.reasons.get(key, 0) + 1

    def line(self) -> str:
        return (
            f"{self.total} messages: {self.done} done, {self.failed} failed, {self.skipped} skipped"
        )


class Progress:
    """One self-updating line on a terminal; nothing when output is not a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._started = time.monotonic()

    def update(self, summary: Summary) -> None:
        if not self._enabled:
            return
        rate = summary.total / max(time.monotonic() - self._started, 1e-6)
        self._stream.write(f"\r{summary.line()}  ({rate:.1f}/s)")
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\n")


class RateLimit:
    """At most ``per_second`` calls to ``wait`` return per second (0: unlimited)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._clock = clock
        self._next = clock()

    def wait(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        if self._next > now:
            time.sleep(self._next - now)
        self._next = max(self._next, now) + self._interval


def replay_attributes(attributes: dict[str, str]) -> dict[str, str]:
    """A dead letter's attributes without what the dead-lettering added."""
    return {k: v for k, v in attributes.items() if k not in DEAD_LETTER_ATTRIBUTES}


DrainStep = Callable[[Received], tuple[bool, str, str]]  # → (acknowledge, result, reason)


def republish_to(publisher: Publisher) -> DrainStep:
    def act(received: Received) -> tuple[bool, str, str]:
        try:
            publisher.publish(received.data, replay_attributes(dict(received.attributes)))
        except Exception as exc:
            return False, "failed", f"publish failed: {type(exc).__name__}: {exc}"
        return True, "done", ""

    return act


def _summary_result(handled: Handled) -> str:
    """done, skipped (acknowledged without an upload: superseded, skipped) or failed."""
    outcome = handled.outcome
    if handled.decision is not Decision.ACK or outcome is None or not outcome.acknowledges:
        return "failed"  # retried, dead-lettered, or refused before an upload
    return "done" if outcome.action is Action.DONE else "skipped"


class _Upload:
    """Uploads each message now; drops its object (if so configured) after the ack."""

    def __init__(self, handler: PubSubHandler) -> None:
        self._handler = handler
        self._settled: dict[str, Handled] = {}

    def __call__(self, received: Received) -> tuple[bool, str, str]:
        handled = self._handler.handle(received)
        result = _summary_result(handled)
        if handled.decision is Decision.ACK:
            self._settled[received.message_id] = handled
        return handled.decision is Decision.ACK, result, handled.reason

    def after_ack(self, received: Received) -> None:
        handled = self._settled.pop(received.message_id, None)
        if handled is not None:
            try:
                self._handler.finish(handled)
            except Exception:  # clean-up never undoes an acknowledged upload
                log.exception("clean-up after upload failed")


def upload_with(handler: PubSubHandler) -> DrainStep:
    return _Upload(handler)


def describe(received: Received) -> str:
    reason = received.attributes.get("dead_letter_reason", "")
    try:
        message = decode(received.data)
        what = f"sop={message.sop_instance_uid} size={message.size}"
    except ValueError as exc:
        what = f"undecodable ({exc})"
    return f"{received.message_id}  {what}" + (f"  reason: {reason}" if reason else "")


def drain(
    subscriber: Any,
    subscription: str,
    action: DrainStep | None,
    *,
    rate: float = 0.0,
    limit: int = 0,
    out: TextIO | None = None,
    progress: Progress | None = None,
) -> Summary:
    """Pull until the subscription has nothing new; ``action`` None is a dry run.

    Every message leased and not acknowledged (failed, listed by a dry run, or in hand when
    the drain is interrupted) is released at the end, back to the subscription.
    """
    out = out or sys.stdout
    summary = Summary()
    unsettled: dict[str, None] = {}  # ack ids leased and not acknowledged, in order
    seen: set[str] = set()
    acked: set[str] = set()
    limiter = RateLimit(rate)
    after_ack = getattr(action, "after_ack", None)
    empty = 0
    try:
        while (not limit or summary.total < limit) and empty < EMPTY_PULLS:
            want = PULL_BATCH if not limit else min(PULL_BATCH, limit - summary.total)
            fresh = _pull_fresh(subscriber, subscription, want, seen, acked, unsettled)
            if not fresh:
                empty += 1
                continue
            empty = 0
            ids = [m.ack_id for m in fresh]
            unsettled.update(dict.fromkeys(ids))
            subscriber.modify_ack_deadline(
                request={
                    "subscription": subscription,
                    "ack_ids": ids,
                    "ack_deadline_seconds": LEASE_SECONDS,
                }
            )
            for item in fresh:
                seen.add(item.message.message_id)
                received = Received(
                    item.message.message_id,
                    bytes(item.message.data),
                    dict(item.message.attributes),
                    item.delivery_attempt or None,
                )
                if action is None:
                    out.write(describe(received) + "\n")
                    summary.count("skipped")
                    continue
                limiter.wait()
                acknowledge, result, reason = action(received)
                summary.count(result, reason)
                if acknowledge:
                    subscriber.acknowledge(
                        request={"subscription": subscription, "ack_ids": [item.ack_id]}
                    )
                    acked.add(received.message_id)
                    del unsettled[item.ack_id]
                    if after_ack is not None:
                        after_ack(received)
                if progress is not None:
                    progress.update(summary)
    finally:
        held = list(unsettled)
        for start in range(0, len(held), 1000):
            subscriber.modify_ack_deadline(
                request={
                    "subscription": subscription,
                    "ack_ids": held[start : start + 1000],
                    "ack_deadline_seconds": 0,
                }
            )
        if progress is not None:
            progress.close()
    return summary


def _pull_fresh(
    subscriber: Any,
    subscription: str,
    want: int,
    seen: set[str],
    acked: set[str],
    unsettled: dict[str, None],
) -> list[Any]:
    """One pull; the messages not yet seen in this drain. Repeats are settled or held."""
    try:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": want}, timeout=30
        )
        received_messages = list(response.received_messages)
    except api_exceptions.DeadlineExceeded:  # how an empty subscription answers
        return []
    fresh = []
    for item in received_messages:
        message_id = item.message.message_id
        if message_id not in seen:
            fresh.append(item)
        elif message_id in acked:  # a duplicate delivery of one already handled
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": [item.ack_id]})
        else:
            unsettled[item.ack_id] = None
    return fresh


def seek(subscriber: Any, subscription: str, when: datetime | None, snapshot: str | None) -> None:
    request: dict[str, Any] = {"subscription": subscription}
    if snapshot:
        request["snapshot"] = snapshot
    elif when is not None:
        request["time"] = when
    else:
        raise ValueError("seek needs a time or a snapshot")
    subscriber.seek(request=request)


# ---- bucket reconciliation ----

_NAME = re.compile(r"^(?P<study>[0-9.]+)/(?P<series>[0-9.]+)/(?P<sop>[0-9.]+)\.dcm$")


@dataclass
class BucketReconcileReport:
    objects: int = 0
    present: int = 0
    published: int = 0
    unusable: int = 0
    failed: int = 0  # studies the store could not be asked about, publishes that failed


def bucket_objects(
    client: Any, bucket: str, prefix: str, newer_than: datetime | None
) -> Iterator[tuple[Any, str, str, str]]:
    """(blob, study, series, sop) for every instance object under the prefix."""
    base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    for blob in client.list_blobs(bucket, prefix=base or None):
        match = _NAME.match(blob.name[len(base) :])
        if match is None:
            continue
        if newer_than is not None and blob.time_created and blob.time_created < newer_than:
            continue
        uids = match.group("study", "series", "sop")
        if all(is_valid_uid(uid) for uid in uids):
            yield blob, *uids


def message_for_blob(
    blob: Any, bucket: str, study: str, series: str, sop: str, called_ae: str
) -> InstanceMessage:
    """The message the receiver would have published for this object version."""
    head = blob.download_as_bytes(start=0, end=_META_PROBE - 1, checksum=None)
    with tempfile.NamedTemporaryFile(suffix=".dcm") as probe:
        probe.write(head)
        probe.flush()
        meta = read_file_meta_info(probe.name)
    if str(meta.MediaStorageSOPInstanceUID) != sop:
        raise ValueError("file meta names another SOP instance than the object name")
    stored = StoredObject(
        f"gs://{bucket}/{blob.name}", str(blob.generation), int(blob.size), str(blob.crc32c)
    )
    created = blob.time_created or datetime.now(UTC)
    return message_from_meta(meta, stored, study, series, called_ae, created)


def reconcile_bucket(
    client: Any,
    bucket: str,
    prefix: str,
    present_in_study: Callable[[str], set[str]],
    publisher: Publisher | None,
    called_ae: str = "IMPORTADAPTER",
    newer_than: datetime | None = None,
    out: TextIO | None = None,
) -> BucketReconcileReport:
    """Publish a message for every object whose instance the DICOM store lacks.

    ``publisher`` None is a dry run: the missing instances are listed, nothing published.
    """
    out = out or sys.stdout
    report = BucketReconcileReport()
    known: dict[str, set[str] | None] = {}
    for blob, study, series, sop in bucket_objects(client, bucket, prefix, newer_than):
        report.objects += 1
        if study not in known:
            try:
                known[study] = present_in_study(study)
            except Exception as exc:  # one study's failure must not stop the rest
                log.error("cannot ask the DICOM store about study %s: %s", study, exc)
                known[study] = None
        present = known[study]
        if present is None:
            report.failed += 1
            continue
        if sop in present:
            report.present += 1
            continue
        try:
            message = message_for_blob(blob, bucket, study, series, sop, called_ae)
        except Exception as exc:  # one damaged object must not stop the rest
            report.unusable += 1
            log.error("cannot rebuild a message for %s: %s", blob.name, type(exc).__name__)
            continue
        if publisher is None:
            out.write(f"missing  sop={sop}  gs://{bucket}/{blob.name}#{blob.generation}\n")
        else:
            try:
                message_id = publisher.publish(encode(message), message.attributes)
            except Exception as exc:
                report.failed += 1
                log.error("publish failed for %s: %s", sop, type(exc).__name__)
                continue
            log.info(
                "published a message for an object the store lacks",
                extra={"sop_instance_uid": sop, "message_id": message_id},
            )
        report.published += 1
    return report
