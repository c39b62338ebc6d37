"""The ``dicom-ingest`` command.

``local`` runs the embedded pipeline (``status``, ``requeue``, ``reconcile`` manage it);
``receive`` runs the cloud receiver, ``work`` a pull uploader, ``replay`` brings Pub/Sub
backlogs and orphaned bucket objects back into the pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from google.api_core.exceptions import GoogleAPIError
from google.auth.exceptions import GoogleAuthError
from google.cloud import pubsub_v1, storage

from ingest.adapters.dicomweb import instance_uids, make_session
from ingest.adapters.pubsub import (
    PubSubPublisher,
    check_subscription,
    check_topic,
    make_publisher_client,
)
from ingest.adapters.spool import SpoolObjectStore
from ingest.adapters.sqlite_queue import QUEUE_FILE, QueueDamaged, SqliteQueue
from ingest.contracts import logs
from ingest.contracts.message import MessageError, decode
from ingest.contracts.settings import ConfigError, Flag, add_flags, resolve, select
from receiver.adapter_flags import add_adapter_flags, check_adapter_flags
from receiver.config import FLAGS as RECEIVER_FLAGS
from receiver.config import ReceiverConfig
from receiver.reconcile import reconcile
from uploader.config import CLOUD_FLAGS as CLOUD_UPLOADER_FLAGS
from uploader.config import FLAGS as UPLOADER_FLAGS
from uploader.config import PubSubConfig, UploaderConfig
from uploader.pull import PullWorker

from . import replay
from .cloud import FLAGS as CLOUD_RECEIVER_FLAGS
from .cloud import CloudReceiver, CloudReceiverConfig
from .local import LocalConfig, LocalPipeline
from .signals import StopSignals
from .wiring import build_pubsub_handler

log = logging.getLogger(__name__)

RECONCILE_MIN_AGE = 60.0

COMMON_FLAGS = logs.FLAGS
SPOOL_FLAG = Flag("spool_dir", "spool directory: objects, queue database, staging")
SUBSCRIPTION_FLAG = Flag("subscription", "Pub/Sub subscription (projects/P/subscriptions/S)")
CALLED_AE_FLAGS = select(RECEIVER_FLAGS, "dimse_aet")
# `replay reconcile`: where the objects are, where their messages go, which store to ask.
BUCKET_RECONCILE_FLAGS = (
    *select(CLOUD_RECEIVER_FLAGS, "bucket", "object_prefix", "topic"),
    *CALLED_AE_FLAGS,
    *select(UPLOADER_FLAGS, "dicomweb_address", "auth", "bearer_token", "request_deadline"),
    *COMMON_FLAGS,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-ingest",
        description="Receive DICOM C-STORE, queue durably, upload with STOW-RS.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="run receiver, queue and uploader on this machine")
    add_flags(local, (SPOOL_FLAG, *RECEIVER_FLAGS, *UPLOADER_FLAGS, *COMMON_FLAGS))
    add_adapter_flags(local)

    status = sub.add_parser("status", help="show the local queue: pending, retrying, dead letters")
    add_flags(status, (SPOOL_FLAG,))
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=20, help="dead letters to list")

    requeue = sub.add_parser("requeue", help="move dead letters back to the queue")
    add_flags(requeue, (SPOOL_FLAG,))
    group = requeue.add_mutually_exclusive_group(required=True)
    group.add_argument("--all", action="store_true", help="every dead letter")
    group.add_argument("--ids", nargs="+", metavar="ID", help="these message ids")
    rec = sub.add_parser(
        "reconcile", help="enqueue a message for every spooled object that has none"
    )
    add_flags(rec, (SPOOL_FLAG, *CALLED_AE_FLAGS))

    receive = sub.add_parser(
        "receive", help="run the receiver: C-STORE to Cloud Storage and Pub/Sub (GKE)"
    )
    add_flags(receive, (SPOOL_FLAG, *RECEIVER_FLAGS, *CLOUD_RECEIVER_FLAGS, *COMMON_FLAGS))
    add_adapter_flags(receive)

    work = sub.add_parser(
        "work", help="upload from a Pub/Sub subscription with streaming pull (backlogs, large)"
    )
    add_flags(work, (SUBSCRIPTION_FLAG, *CLOUD_UPLOADER_FLAGS, *COMMON_FLAGS))

    replay = sub.add_parser("replay", help="bring Pub/Sub backlogs back: drain, seek, reconcile")
    how = replay.add_subparsers(dest="replay_command", required=True)
    drain = how.add_parser(
        "drain", help="empty a subscription (e.g. dead letters) into the topic or the store"
    )
    add_flags(drain, (SUBSCRIPTION_FLAG,))
    target = drain.add_mutually_exclusive_group(required=True)
    target.add_argument("--to_topic", "--to-topic", metavar="TOPIC", help="re-publish here")
    target.add_argument(
        "--upload", action="store_true", help="upload each instance now (uploader flags apply)"
    )
    target.add_argument("--dry_run", "--dry-run", action="store_true", help="list, change nothing")
    drain.add_argument("--rate", type=float, default=0.0, help="messages per second (0: no limit)")
    drain.add_argument("--limit", type=int, default=0, help="stop after this many (0: all)")
    add_flags(drain, (*CLOUD_UPLOADER_FLAGS, *COMMON_FLAGS))

    seek = how.add_parser("seek", help="redeliver what a subscription retained since a time")
    add_flags(seek, (SUBSCRIPTION_FLAG,))
    point = seek.add_mutually_exclusive_group(required=True)
    point.add_argument("--time", help="e.g. 2026-11-24T10:00:00Z")
    point.add_argument("--snapshot", help="projects/P/snapshots/NAME")

    recb = how.add_parser(
        "reconcile", help="publish messages for bucket objects the DICOM store lacks"
    )
    add_flags(recb, BUCKET_RECONCILE_FLAGS)
    recb.add_argument("--newer_than", "--newer-than", help="only objects created since this time")
    recb.add_argument("--dry_run", "--dry-run", action="store_true", help="list, publish nothing")
    return parser


def _spool(namespace: argparse.Namespace) -> Path:
    values = resolve((SPOOL_FLAG,), namespace)
    if not values["spool_dir"]:
        raise ConfigError("--spool_dir is required")
    return Path(values["spool_dir"])


def _open_queue(spool: Path) -> SqliteQueue:
    path = spool / QUEUE_FILE
    if not path.is_file():
        raise ConfigError(f"no queue at {path}; has `dicom-ingest local` run with this spool?")
    try:
        return SqliteQueue(path)
    except QueueDamaged as exc:
        raise ConfigError(
            f"the queue at {path} is damaged ({exc}); `dicom-ingest local` rebuilds it from the"
            " spool when it starts"
        ) from exc


def _run_local(namespace: argparse.Namespace, signals: StopSignals | None = None) -> int:
    notes = check_adapter_flags(namespace)
    values = resolve((SPOOL_FLAG, *RECEIVER_FLAGS, *UPLOADER_FLAGS, *COMMON_FLAGS), namespace)
    if not values["spool_dir"]:
        raise ConfigError("--spool_dir is required")
    receiver = ReceiverConfig.from_values(values)
    uploader = UploaderConfig.from_values(values)
    logs.configure(values["log_format"], values["verbose"])
    for note in notes:
        log.warning(note)

    signals = signals or StopSignals.install()  # before the spool is opened
    try:
        pipeline = LocalPipeline(LocalConfig(Path(values["spool_dir"]), receiver, uploader))
    except OSError as exc:
        raise ConfigError(f"cannot start: {exc}") from exc
    return pipeline.run(signals)


def _describe(body: bytes) -> dict[str, str]:
    try:
        message = decode(body)
    except MessageError as exc:
        return {"error": str(exc)}
    return {
        "study_instance_uid": message.study_instance_uid,
        "sop_instance_uid": message.sop_instance_uid,
        "uri": message.uri,
    }


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _run_status(namespace: argparse.Namespace) -> int:
    queue = _open_queue(_spool(namespace))
    stats = queue.stats()
    dead = queue.dead_letters(namespace.limit)
    rebuilds = queue.rebuilds()
    queue.close()
    if namespace.json:
        print(
            json.dumps(
                {
                    "pending": stats.pending,
                    "in_flight": stats.in_flight,
                    "retrying": stats.retrying,
                    "dead": stats.dead,
                    "oldest_pending_age_seconds": stats.oldest_pending_age,
                    "rebuilds": [
                        {
                            "rebuilt_at": _utc(r.rebuilt_at),
                            "damaged_file": r.damaged_file,
                            "reason": r.reason,
                        }
                        for r in rebuilds
                    ],
                    "dead_letters": [
                        {
                            "message_id": d.message_id,
                            "attempts": d.attempts,
                            "reason": d.reason,
                            **_describe(d.body),
                        }
                        for d in dead
                    ],
                },
                indent=2,
            )
        )
        return 0
    age = "-" if stats.oldest_pending_age is None else f"{stats.oldest_pending_age:.0f}s"
    print(f"pending     {stats.pending}")
    print(f"in flight   {stats.in_flight}")
    print(f"retrying    {stats.retrying}")
    print(f"dead        {stats.dead}")
    print(f"oldest      {age}")
    for r in rebuilds:
        print(
            f"\nqueue rebuilt from the spool at {_utc(r.rebuilt_at)}"
            f" (damaged file kept as {r.damaged_file}): {r.reason}"
        )
    if dead:
        print("\ndead letters (requeue with: dicom-ingest requeue --spool_dir DIR --all):")
        for d in dead:
            info = _describe(d.body)
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.failed_at))
            sop = info.get("sop_instance_uid", "?")
            print(f"  {d.message_id}  {when}  attempts={d.attempts}  sop={sop}")
            print(f"      {d.reason}")
    return 0


def _run_requeue(namespace: argparse.Namespace) -> int:
    queue = _open_queue(_spool(namespace))
    ids = None if namespace.all else namespace.ids
    if ids is not None and not all(i.isascii() and i.isdigit() for i in ids):
        queue.close()
        raise ConfigError("--ids takes message ids as shown by `dicom-ingest status`")
    moved = queue.requeue(ids)
    queue.close()
    print(f"requeued {moved} message(s)")
    return 0


def _run_reconcile(namespace: argparse.Namespace) -> int:

    spool = _spool(namespace)
    queue = _open_queue(spool)
    called_ae = resolve(CALLED_AE_FLAGS, namespace)["dimse_aet"]
    try:
        # The pipeline may be running: leave objects alone that are seconds old.
        report = reconcile(SpoolObjectStore(spool), queue, called_ae, min_age=RECONCILE_MIN_AGE)
    finally:
        queue.close()
    print(
        f"{report.objects} object(s) in the spool; {report.enqueued} had no message and were"
        f" enqueued; {report.unusable} could not be read"
    )
    return 1 if report.unusable else 0


def _run_receive(namespace: argparse.Namespace, signals: StopSignals | None = None) -> int:

    notes = check_adapter_flags(namespace)
    values = resolve((SPOOL_FLAG, *RECEIVER_FLAGS, *CLOUD_RECEIVER_FLAGS, *COMMON_FLAGS), namespace)
    if not values["spool_dir"]:
        raise ConfigError("--spool_dir is required (staging, and the spool with --ack_after=spool)")
    logs.configure(values["log_format"], values["verbose"])
    for note in notes:
        log.warning(note)
    config = CloudReceiverConfig.from_values(
        Path(values["spool_dir"]), ReceiverConfig.from_values(values), values
    )
    signals = signals or StopSignals.install()
    try:
        receiver = CloudReceiver(config)
    except OSError as exc:
        raise ConfigError(f"cannot start: {exc}") from exc
    return receiver.run(signals)


def _subscription(namespace: argparse.Namespace) -> str:

    return check_subscription(resolve((SUBSCRIPTION_FLAG,), namespace)["subscription"] or "")


def _pubsub_handler(namespace: argparse.Namespace, dead_letters: bool = True) -> Any:

    values = resolve((*CLOUD_UPLOADER_FLAGS, *COMMON_FLAGS), namespace)
    logs.configure(values["log_format"], values["verbose"])
    pubsub = PubSubConfig.from_values(values)
    if not dead_letters:  # replaying dead letters: a failure stays where it is
        pubsub = dataclasses.replace(pubsub, dead_letter_topic=None)
    return build_pubsub_handler(UploaderConfig.from_values(values), pubsub), values


def _run_work(namespace: argparse.Namespace) -> int:

    subscription = _subscription(namespace)
    handler, values = _pubsub_handler(namespace)
    worker = PullWorker(
        pubsub_v1.SubscriberClient(), subscription, handler, concurrency=values["upload_workers"]
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    worker.run(stop)
    return 0


def _run_replay(namespace: argparse.Namespace) -> int:

    command = namespace.replay_command
    if command == "reconcile":
        return _run_bucket_reconcile(namespace)
    subscription = _subscription(namespace)
    subscriber = pubsub_v1.SubscriberClient()
    try:
        if command == "seek":
            when = _time(namespace.time)
            replay.seek(subscriber, subscription, when, namespace.snapshot)
            print(f"{subscription}: sought to {namespace.time or namespace.snapshot}")
            return 0
        action: replay.DrainStep | None = None
        if namespace.to_topic:
            topic = check_topic(namespace.to_topic, "to_topic")
            action = replay.republish_to(PubSubPublisher(make_publisher_client(), topic))
        elif namespace.upload:
            handler, _ = _pubsub_handler(namespace, dead_letters=False)
            action = replay.upload_with(handler)
        summary = replay.drain(
            subscriber,
            subscription,
            action,
            rate=namespace.rate,
            limit=namespace.limit,
            progress=replay.Progress(),
        )
    finally:
        subscriber.close()
    prefix = "dry run: " if action is None else ""
    print(f"{prefix}{summary.line()}")
    for reason, count in sorted(summary.reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {count} x {reason}")
    return 1 if summary.failed else 0


def _time(text: str | None) -> datetime | None:

    try:
        return replay.parse_time(text) if text else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _run_bucket_reconcile(namespace: argparse.Namespace) -> int:

    values = resolve(BUCKET_RECONCILE_FLAGS, namespace)
    logs.configure(values["log_format"], values["verbose"])
    if not values["bucket"]:
        raise ConfigError("--bucket is required")
    address = values["dicomweb_address"]
    if not address:
        raise ConfigError("--dicomweb_address is required")
    if values["request_deadline"] <= 0:
        raise ConfigError("--request_deadline must be positive")
    session = make_session(values["auth"], values["bearer_token"], values["request_deadline"])
    newer_than = _time(namespace.newer_than)
    publisher = None
    if not namespace.dry_run:
        publisher = PubSubPublisher(make_publisher_client(), check_topic(values["topic"] or ""))
    report = replay.reconcile_bucket(
        storage.Client(),
        values["bucket"],
        values["object_prefix"],
        lambda study: instance_uids(session, address, study),
        publisher,
        called_ae=values["dimse_aet"],
        newer_than=newer_than,
    )
    verb = "missing (dry run)" if publisher is None else "published"
    print(
        f"{report.objects} object(s); {report.present} in the DICOM store; {report.published}"
        f" {verb}; {report.unusable} unreadable; {report.failed} not checked or not published"
    )
    return 1 if report.unusable or report.failed else 0


def main(argv: Sequence[str] | None = None, signals: StopSignals | None = None) -> int:
    """The command line; ``signals``: SIGTERM and SIGINT already installed by the entry point
    (``dicom_ingest.__main__``) for the serving commands."""
    namespace = _parser().parse_args(argv)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "local": lambda namespace: _run_local(namespace, signals),
        "status": _run_status,
        "reconcile": _run_reconcile,
        "requeue": _run_requeue,
        "receive": lambda namespace: _run_receive(namespace, signals),
        "work": _run_work,
        "replay": _run_replay,
    }
    try:
        return commands[namespace.command](namespace)
    except ConfigError as exc:
        logs.fatal(f"dicom-ingest: error: {exc}")
        return 2
    except sqlite3.Error as exc:
        logs.fatal(f"dicom-ingest: error: the queue database cannot be used: {exc}")
        return 2
    except GoogleAuthError as exc:
        logs.fatal(f"dicom-ingest: error: Google credentials: {exc}")
        return 2
    except GoogleAPIError as exc:
        logs.fatal(f"dicom-ingest: error: Google Cloud: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
