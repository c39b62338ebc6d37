"""The ``dicom-ingest`` command: ``local`` runs the pipeline; ``status``, ``requeue`` manage it."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from google.auth.exceptions import GoogleAuthError

from receiver.config import FLAGS as RECEIVER_FLAGS
from receiver.config import ReceiverConfig
from uploader.config import FLAGS as UPLOADER_FLAGS
from uploader.config import UploaderConfig

from . import logs
from .flags import ConfigError, Flag, add_flags, resolve
from .message import MessageError, decode
from .queue import QUEUE_FILE, SqliteQueue

RECONCILE_MIN_AGE = 60.0

COMMON_FLAGS = (
    Flag("log_format", "log output", "text", choices=("text", "json")),
    Flag("verbose", "debug logging", False, lambda v: v.lower() in ("1", "true", "yes")),
)
SPOOL_FLAG = Flag("spool_dir", "spool directory: objects, queue database, staging")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-ingest",
        description="Receive DICOM C-STORE, queue durably, upload with STOW-RS.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="run receiver, queue and uploader on this machine")
    add_flags(local, (SPOOL_FLAG, *RECEIVER_FLAGS, *UPLOADER_FLAGS, *COMMON_FLAGS))

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
    add_flags(rec, (SPOOL_FLAG, RECEIVER_FLAGS[0]))
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
    return SqliteQueue(path)


def _run_local(namespace: argparse.Namespace) -> int:
    values = resolve((SPOOL_FLAG, *RECEIVER_FLAGS, *UPLOADER_FLAGS, *COMMON_FLAGS), namespace)
    if not values["spool_dir"]:
        raise ConfigError("--spool_dir is required")
    receiver = ReceiverConfig.from_values(values)
    uploader = UploaderConfig.from_values(values)
    logs.configure(values["log_format"], values["verbose"])
    from .local import LocalConfig, LocalPipeline

    try:
        pipeline = LocalPipeline(LocalConfig(Path(values["spool_dir"]), receiver, uploader))
    except OSError as exc:
        raise ConfigError(f"cannot start: {exc}") from exc
    return pipeline.run()


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


def _run_status(namespace: argparse.Namespace) -> int:
    queue = _open_queue(_spool(namespace))
    stats = queue.stats()
    dead = queue.dead_letters(namespace.limit)
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
    from receiver.reconcile import reconcile

    from .objectstore import SpoolObjectStore

    spool = _spool(namespace)
    queue = _open_queue(spool)
    called_ae = resolve((RECEIVER_FLAGS[0],), namespace)["dimse_aet"]
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


def main(argv: Sequence[str] | None = None) -> int:
    namespace = _parser().parse_args(argv)
    try:
        if namespace.command == "local":
            return _run_local(namespace)
        if namespace.command == "status":
            return _run_status(namespace)
        if namespace.command == "reconcile":
            return _run_reconcile(namespace)
        return _run_requeue(namespace)
    except ConfigError as exc:
        print(f"dicom-ingest: error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        print(f"dicom-ingest: error: the queue database cannot be used: {exc}", file=sys.stderr)
        return 2
    except GoogleAuthError as exc:
        print(f"dicom-ingest: error: Google credentials: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
