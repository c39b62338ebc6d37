"""Start-up steps shared by the local and the cloud deployments."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.adapters.disk_reserve import DiskReserve
from ingest.adapters.private_files import make_private_dir
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import QUEUE_FILE, QueueDamaged, SqliteQueue, move_aside
from ingest.contracts.message import MessageError, decode, encode
from ingest.workers import report_dead_letter
from receiver.reconcile import reconcile

from .signals import EXIT_HURRIED, StopSignals

log = logging.getLogger(__name__)


def open_spool(
    spool_dir: Path, called_ae: str, max_attempts: int
) -> tuple[SpoolObjectStore, SqliteQueue]:
    """The spool's objects and queue, made consistent after whatever stopped the last run.

    Partial files are removed, interrupted deliveries released, and every object that has
    no message (a crash between write and publish, a lost queue file) gets one. A damaged
    queue database is kept aside and replaced by one rebuilt from the spool.
    """
    make_private_dir(spool_dir, parents=True, tighten=True)
    objects = SpoolObjectStore(spool_dir)
    leftovers = objects.clear_staging()
    if leftovers:
        log.info("removed %d partial files from an earlier run", leftovers)
    # The objects are the source of truth: reconcile (below) rebuilds every message a power
    # loss could take back, so the queue's commits need no fsync of their own.
    queue = open_queue(spool_dir / QUEUE_FILE, max_attempts)
    released = queue.release_leases()
    if released:
        log.info("resuming %d deliveries interrupted by an earlier stop", released)
    repoint_moved(objects, queue)  # first: reconciliation would give objects a second message
    report = reconcile(objects, queue, called_ae, prune=True)
    if report.enqueued or report.unusable or report.pruned:
        log.warning(
            "spool reconciled: %d objects had no message and were enqueued",
            report.enqueued,
            extra={"unusable": report.unusable, "pruned": report.pruned},
        )
    return objects, queue


def repoint_moved(objects: SpoolObjectStore, queue: SqliteQueue) -> str | None:
    """After the spool was moved (its queue with it): the queue's records re-pointed at the
    objects where they are now, and one WARNING saying how many; that line, or None."""
    messages, settled = queue.repoint(objects.uri_prefix, objects.adopt_uri, _with_uri)
    if not messages and not settled:
        return None
    line = (
        f"spool moved: {messages} messages (queued or dead-lettered) and {settled} records of"
        f" settled uploads re-pointed at its objects in {objects.root}"
    )
    log.warning("%s", line)
    return line


def _with_uri(body: bytes, uri: str) -> bytes | None:
    """A message body naming its object at ``uri``; None for a body that is no message."""
    try:
        return encode(dataclasses.replace(decode(body), uri=uri))
    except MessageError:
        return None


def open_queue(path: Path, max_attempts: int) -> SqliteQueue:
    """The spool's queue; a damaged one is moved aside and a new, empty one made in its place.

    The new queue is filled by reconciliation, from the spool's objects: what it loses is the
    record of uploads already settled or dead-lettered, so those objects are uploaded again.
    """
    try:
        queue = _queue(path, max_attempts)
    except QueueDamaged as exc:
        reason = f"does not open: {exc}"
    else:
        finding = queue.quick_check()
        if finding is None:
            return queue
        queue.close()
        reason = f"fails its check: {finding}"
    kept = move_aside(path)
    log.error(
        "queue database damaged (%s); kept as %s, rebuilding the queue from the spool",
        reason,
        kept.name,
        extra={"damaged_file": str(kept)},
    )
    queue = _queue(path, max_attempts)
    queue.record_rebuild(kept.name, reason)
    return queue


def _queue(path: Path, max_attempts: int) -> SqliteQueue:
    return SqliteQueue(
        path,
        max_attempts=max_attempts,
        durable_commits=False,
        on_dead_letter=report_dead_letter,
        reserve=DiskReserve.beside(path),
    )


def reachable(bind: str) -> str:
    """Where this machine reaches a listener bound to ``bind``."""
    return "127.0.0.1" if bind in ("", "0.0.0.0", "::") else bind  # noqa: S104


def log_ready(
    logger: logging.Logger,
    host: str,
    port: int,
    ae_title: str,
    note: str | None = None,
    **fields: Any,
) -> None:
    """The ready line with its figures as fields (and a note, such as the DICOM store's
    state, in its text), then a command to try, on a line of its own."""
    logger.info(
        "ready: accepting associations%s",
        f"; {note}" if note else "",
        extra={"ae_title": ae_title, "port": port, **fields},
    )
    logger.info("try: dcmsend %s %d -aec %s <files>", host, port, ae_title)


def run_until_signal(
    start: Callable[[], None],
    stop: Callable[[threading.Event], object],
    signals: StopSignals | None = None,
) -> int:
    """Start (unless a stop was asked for already), wait for SIGTERM or SIGINT, stop.

    The exit status: 0, or ``EXIT_HURRIED`` when a second signal cut the drain short.
    """
    signals = signals or StopSignals.install()
    if not signals.requested.is_set():
        start()
        # The main thread runs the handlers, between bytecodes; a signal the kernel hands to
        # another thread (gRPC's, say) does not wake a wait without a timeout.
        while not signals.requested.wait(0.2):
            pass
    stop(signals.hurry)
    signals.stopped()
    return EXIT_HURRIED if signals.hurry.is_set() else 0
