"""The ``dicom-ingest`` command.

``local`` runs the embedded pipeline (``status``, ``requeue``, ``reconcile`` manage it);
``receive`` runs the cloud receiver, ``work`` a pull uploader, ``replay`` brings Pub/Sub
backlogs and orphaned bucket objects back into the pipeline.

Exit status: 0 done; 1 done, but some items failed (``reconcile``, ``replay``); 2 a mistake
on the command line or in the settings (with the subcommand's usage), or a queue that cannot
be used; 3 a port it was asked to listen on is in use; 130 interrupted; 141 its output was
closed (``status | head``), quietly.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import os
import re
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
from ingest.contracts.settings import (
    ConfigError,
    Flag,
    PortInUse,
    add_flags,
    count,
    number,
    optional,
    path,
    resolve,
    seconds,
    select,
)
from receiver.adapter_flags import add_adapter_flags, check_adapter_flags
from receiver.config import FLAGS as RECEIVER_FLAGS
from receiver.config import ReceiverConfig
from receiver.processes import ReceiveProcessFailed
from receiver.reconcile import reconcile
from uploader.config import CLOUD_FLAGS as CLOUD_UPLOADER_FLAGS
from uploader.config import FLAGS as UPLOADER_FLAGS
from uploader.config import PubSubConfig, UploaderConfig
from uploader.pull import FLAGS as PULL_FLAGS

from . import replay
from .cloud import FLAGS as CLOUD_RECEIVER_FLAGS
from .cloud import CloudReceiver, CloudReceiverConfig
from .local import FLAGS as LOCAL_FLAGS
from .local import LocalConfig, LocalPipeline
from .progress import ProgressBar
from .signals import StopSignals
from .startup import repoint_moved
from .status_page import FLAGS as STATUS_PAGE_FLAGS
from .status_page import StatusPageConfig
from .wiring import PullDeployment, build_pubsub_handler

log = logging.getLogger(__name__)

RECONCILE_MIN_AGE = 60.0
EXIT_USAGE = 2  # a mistake on the command line or in the settings
EXIT_PORT_IN_USE = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: the reader went away, as `yes | head` ends
DEAD = "dead_letters"
CLEAR_SCREEN = "\x1b[H\x1b[2J"  # cursor home, erase the screen

COMMON_FLAGS = logs.FLAGS
SPOOL_FLAG = Flag(
    "spool_dir", "spool directory: objects, queue database, staging", type=path, required=True
)
SUBSCRIPTION_FLAG = Flag(
    "subscription", "Pub/Sub subscription (projects/P/subscriptions/S)", required=True
)
STATUS_FLAGS = (
    Flag("limit", "dead letters to list", 20, count, env_var=False, metavar="N"),
    Flag(
        "watch",
        "show it again every SECONDS (2 when not given) until Ctrl-C; on a terminal the screen"
        " is redrawn, elsewhere each snapshot is printed after the last",
        type=seconds,
        env_var=False,
        const="2",
        metavar="SECONDS",
    ),
)
DRAIN_FLAGS = (
    Flag("rate", "messages per second (0: no limit)", 0.0, number, env_var=False),
    Flag("limit", "stop after this many (0: all)", 0, count, env_var=False),
)
CALLED_AE_FLAGS = select(RECEIVER_FLAGS, "dimse_aet")
# `replay drain`: the store's address is needed with --upload only.
DRAIN_UPLOADER_FLAGS = optional(CLOUD_UPLOADER_FLAGS, "dicomweb_address")
# `replay reconcile`: where the objects are, where their messages go (not needed for a dry
# run), which store to ask.
BUCKET_RECONCILE_FLAGS = (
    *optional(select(CLOUD_RECEIVER_FLAGS, "bucket", "object_prefix", "topic"), "topic"),
    *CALLED_AE_FLAGS,
    *select(UPLOADER_FLAGS, "dicomweb_address", "auth", "bearer_token", "request_deadline"),
    *COMMON_FLAGS,
)


class CannotRun(Exception):
    """The command is right but cannot be carried out (no queue here, a spool it cannot open)."""


# Each subcommand's usage: what it requires, then [flags] (all in --help).
USAGE = {
    "local": "--spool_dir DIR --dicomweb_address URL [flags]",
    "status": "--spool_dir DIR [--json] [--limit N] [--watch [SECONDS]]",
    "requeue": "--spool_dir DIR (--all | --ids ID [ID ...])",
    "reconcile": "--spool_dir DIR [--dimse_aet AET]",
    "receive": "--spool_dir DIR --bucket BUCKET --topic TOPIC [flags]",
    "work": "--subscription SUBSCRIPTION --dicomweb_address URL [flags]",
    "replay": "{drain,seek,reconcile} ...",
    "drain": "--subscription SUBSCRIPTION (--to_topic TOPIC | --upload | --dry_run) [flags]",
    "seek": "--subscription SUBSCRIPTION (--time TIME | --snapshot SNAPSHOT)",
    "replay reconcile": "--bucket BUCKET --dicomweb_address URL (--topic TOPIC | --dry_run)"
    " [flags]",
}


def _command(
    parent: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    usage: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand's parser; errors found after parsing are reported with its usage."""
    parser = parent.add_parser(
        name, help=help, description=help, usage=f"%(prog)s {USAGE[usage or name]}"
    )
    parser.set_defaults(command_parser=parser)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicom-ingest",
        description="Receive DICOM C-STORE, queue durably, upload with STOW-RS.",
        epilog="Every subcommand has --help: its flags, their allowed values and defaults.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    local = _command(sub, "local", "run receiver, queue and uploader on this machine")
    add_flags(
        local,
        (
            SPOOL_FLAG,
            *RECEIVER_FLAGS,
            *UPLOADER_FLAGS,
            *STATUS_PAGE_FLAGS,
            *LOCAL_FLAGS,
            *COMMON_FLAGS,
        ),
    )
    add_adapter_flags(local)

    status = _command(sub, "status", "show the local queue: pending, retrying, dead letters")
    add_flags(status, (SPOOL_FLAG, *STATUS_FLAGS))
    status.add_argument(
        "--json", action="store_true", help="machine-readable output (a line per --watch snapshot)"
    )

    requeue = _command(sub, "requeue", "move dead letters back to the queue")
    add_flags(requeue, (SPOOL_FLAG,))
    group = requeue.add_mutually_exclusive_group(required=True)
    group.add_argument("--all", action="store_true", help="every dead letter")
    group.add_argument("--ids", nargs="+", metavar="ID", help="these message ids")
    rec = _command(sub, "reconcile", "enqueue a message for every spooled object that has none")
    add_flags(rec, (SPOOL_FLAG, *CALLED_AE_FLAGS))

    receive = _command(
        sub, "receive", "run the receiver: C-STORE to Cloud Storage and Pub/Sub (GKE)"
    )
    add_flags(receive, (SPOOL_FLAG, *RECEIVER_FLAGS, *CLOUD_RECEIVER_FLAGS, *COMMON_FLAGS))
    add_adapter_flags(receive)

    work = _command(
        sub, "work", "upload from a Pub/Sub subscription with streaming pull (backlogs, large)"
    )
    add_flags(work, (SUBSCRIPTION_FLAG, *CLOUD_UPLOADER_FLAGS, *PULL_FLAGS, *COMMON_FLAGS))

    replay = _command(sub, "replay", "bring Pub/Sub backlogs back: drain, seek, reconcile")
    how = replay.add_subparsers(dest="replay_command", required=True, prog=replay.prog)
    drain = _command(
        how, "drain", "empty a subscription (e.g. dead letters) into the topic or the store"
    )
    add_flags(drain, (SUBSCRIPTION_FLAG,))
    target = drain.add_mutually_exclusive_group(required=True)
    target.add_argument("--to_topic", "--to-topic", metavar="TOPIC", help="re-publish here")
    target.add_argument(
        "--upload", action="store_true", help="upload each instance now (uploader flags apply)"
    )
    target.add_argument("--dry_run", "--dry-run", action="store_true", help="list, change nothing")
    add_flags(drain, (*DRAIN_FLAGS, *DRAIN_UPLOADER_FLAGS, *COMMON_FLAGS))

    seek = _command(how, "seek", "redeliver what a subscription retained since a time")
    add_flags(seek, (SUBSCRIPTION_FLAG,))
    point = seek.add_mutually_exclusive_group(required=True)
    point.add_argument("--time", help="e.g. 2026-11-24T10:00:00Z")
    point.add_argument("--snapshot", help="projects/P/snapshots/NAME")

    recb = _command(
        how,
        "reconcile",
        "publish messages for bucket objects the DICOM store lacks",
        "replay reconcile",
    )
    add_flags(recb, BUCKET_RECONCILE_FLAGS)
    recb.add_argument("--newer_than", "--newer-than", help="only objects created since this time")
    recb.add_argument("--dry_run", "--dry-run", action="store_true", help="list, publish nothing")
    return parser


def _spool(namespace: argparse.Namespace) -> Path:
    return Path(resolve((SPOOL_FLAG,), namespace)["spool_dir"])


def _open_queue(spool: Path) -> SqliteQueue:
    path = spool / QUEUE_FILE
    if not path.is_file():
        raise CannotRun(f"no queue at {path}; has `dicom-ingest local` run with this spool?")
    try:
        return SqliteQueue(path)
    except QueueDamaged as exc:
        raise CannotRun(
            f"the queue at {path} is damaged ({exc}); `dicom-ingest local` rebuilds it from the"
            " spool when it starts"
        ) from exc


def _run_local(namespace: argparse.Namespace, signals: StopSignals | None = None) -> int:
    notes = check_adapter_flags(namespace)
    values = resolve(
        (SPOOL_FLAG, *RECEIVER_FLAGS, *UPLOADER_FLAGS, *STATUS_PAGE_FLAGS, *LOCAL_FLAGS), namespace
    )
    receiver = ReceiverConfig.from_values(values)
    uploader = UploaderConfig.from_values(values)
    page = StatusPageConfig.from_values(values)
    status_page = page if page.ui_port else None  # 0: no page
    for note in notes:
        log.warning(note)

    signals = signals or StopSignals.install()  # before the spool is opened
    try:
        pipeline = LocalPipeline(
            LocalConfig.from_values(
                Path(values["spool_dir"]), receiver, uploader, status_page, values
            )
        )
    except PortInUse:
        raise
    except OSError as exc:
        raise CannotRun(f"cannot start: {exc}") from exc
    try:
        return pipeline.run(signals)
    except ReceiveProcessFailed as exc:
        raise CannotRun(f"cannot start: {exc}") from exc


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


def _status(spool: Path, limit: int) -> dict[str, Any]:
    """The queue's figures, rebuilds and first dead letters, as ``status --json`` shows them."""
    queue = _open_queue(spool)
    try:
        stats = queue.stats()
        dead = queue.dead_letters(limit)
        retrying = queue.retrying(limit)
        rebuilds = queue.rebuilds()
    finally:
        queue.close()
    return {
        "pending": stats.pending,
        "in_flight": stats.in_flight,
        "retrying": stats.retrying,
        "dead": stats.dead,
        "oldest_pending_age_seconds": stats.oldest_pending_age,
        "rebuilds": [
            {"rebuilt_at": _utc(r.rebuilt_at), "damaged_file": r.damaged_file, "reason": r.reason}
            for r in rebuilds
        ],
        "retrying_messages": [
            {
                "message_id": m.message_id,
                "attempts": m.attempts,
                "last_error": m.reason,
                "next_attempt_at": m.next_attempt_at,
                **_describe(m.body),
            }
            for m in retrying
        ],
        "dead_letters": [
            {
                "message_id": d.message_id,
                "attempts": d.attempts,
                "reason": d.reason,
                "failed_at": d.failed_at,
                **_describe(d.body),
            }
            for d in dead
        ],
    }


def _status_text(report: dict[str, Any]) -> str:
    age = report["oldest_pending_age_seconds"]
    lines = [
        f"pending     {report['pending']}",
        f"in flight   {report['in_flight']}",
        f"retrying    {report['retrying']}",
        f"dead        {report['dead']}",
        f"oldest      {'-' if age is None else f'{age:.0f}s'}",
    ]
    for r in report["rebuilds"]:
        lines.append(
            f"\nqueue rebuilt from the spool at {r['rebuilt_at']}"
            f" (damaged file kept as {r['damaged_file']}): {r['reason']}"
        )
    if report["retrying_messages"]:
        lines.append("\nretrying (each with the reason its last attempt failed):")
        for m in report["retrying_messages"]:
            wait = max(0.0, m["next_attempt_at"] - time.time())
            sop = m.get("sop_instance_uid", "?")
            lines.append(
                f"  {m['message_id']}  attempts={m['attempts']}  next in {wait:.0f}s  sop={sop}"
            )
            lines.append(f"      {m['last_error']}")
    if report["dead_letters"]:
        lines.append("\ndead letters (requeue with: dicom-ingest requeue --spool_dir DIR --all):")
        for d in report["dead_letters"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d["failed_at"]))
            sop = d.get("sop_instance_uid", "?")
            lines.append(f"  {d['message_id']}  {when}  attempts={d['attempts']}  sop={sop}")
            lines.append(f"      {d['reason']}")
    return "\n".join(lines) + "\n"


def _run_status(namespace: argparse.Namespace) -> int:
    spool = _spool(namespace)
    options = resolve(STATUS_FLAGS, namespace)
    interval = options["watch"]
    if interval is not None and interval <= 0:
        raise ConfigError("--watch: the interval must be more than 0 seconds")
    show = _status_printer(namespace.json, interval is not None, spool)
    show(_status(spool, options["limit"]))
    if interval is None:
        return 0
    try:
        while True:
            time.sleep(interval)
            show(_status(spool, options["limit"]))
    except KeyboardInterrupt:  # Ctrl-C ends a watch: that is how it is meant to end
        return 0


def _write_lines(text: str) -> None:
    """Line by line, so a reader that stops early (``| head``) is noticed at once."""
    sys.stdout.writelines(text.splitlines(keepends=True))


def _status_printer(as_json: bool, watching: bool, spool: Path) -> Callable[[dict[str, Any]], None]:
    """How each snapshot is shown: JSON, a redrawn screen, or text one snapshot after another."""
    redraw = watching and not as_json and sys.stdout.isatty()

    def show(report: dict[str, Any]) -> None:
        if as_json:  # a document, or a line per snapshot when watching
            dead = [
                {k: v for k, v in d.items() if k != "failed_at"} for d in report["dead_letters"]
            ]
            print(json.dumps({**report, DEAD: dead}, indent=None if watching else 2))
        elif redraw:
            header = f"dicom-ingest status --spool_dir {spool}    {_utc(time.time())}"
            sys.stdout.write(f"{CLEAR_SCREEN}{header}    (Ctrl-C to stop)\n\n")
            _write_lines(_status_text(report))
        else:
            if watching:
                sys.stdout.write(f"--- {_utc(time.time())}\n")
            _write_lines(_status_text(report) + ("\n" if watching else ""))
        sys.stdout.flush()

    return show


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
    called_ae = resolve(CALLED_AE_FLAGS, namespace)["dimse_aet"]
    queue = _open_queue(spool)
    objects = SpoolObjectStore(spool)
    # A spool moved since the pipeline last ran: its messages still name the old place, and
    # without this every object would get a second message.
    moved = repoint_moved(objects, queue)
    if moved is not None:
        print(moved)
    progress = ProgressBar("reconcile", "objects")
    if progress.enabled:  # a bar with an end: count first (names only, no object is read)
        progress = ProgressBar("reconcile", "objects", sum(1 for _ in objects.current_objects()))
    try:
        # The pipeline may be running: leave objects alone that are seconds old.
        report = reconcile(
            objects,
            queue,
            called_ae,
            min_age=RECONCILE_MIN_AGE,
            progress=lambda r: progress.advance({"enqueued": r.enqueued, "unusable": r.unusable}),
        )
    finally:
        progress.close()
        queue.close()
    print(
        f"{report.objects} object(s) in the spool; {report.enqueued} had no message and were"
        f" enqueued; {report.unusable} could not be read"
    )
    return 1 if report.unusable else 0


def _run_receive(namespace: argparse.Namespace, signals: StopSignals | None = None) -> int:

    notes = check_adapter_flags(namespace)
    values = resolve((SPOOL_FLAG, *RECEIVER_FLAGS, *CLOUD_RECEIVER_FLAGS), namespace)
    for note in notes:
        log.warning(note)
    config = CloudReceiverConfig.from_values(
        Path(values["spool_dir"]), ReceiverConfig.from_values(values), values
    )
    signals = signals or StopSignals.install()
    try:
        receiver = CloudReceiver(config)
    except PortInUse:
        raise
    except OSError as exc:
        raise CannotRun(f"cannot start: {exc}") from exc
    return receiver.run(signals)


def _subscription(namespace: argparse.Namespace) -> str:

    return check_subscription(resolve((SUBSCRIPTION_FLAG,), namespace)["subscription"])


def _pubsub_handler(namespace: argparse.Namespace, dead_letters: bool = True) -> Any:

    values = resolve(DRAIN_UPLOADER_FLAGS, namespace)
    pubsub = PubSubConfig.from_values(values)
    if not dead_letters:  # replaying dead letters: a failure stays where it is
        pubsub = dataclasses.replace(pubsub, dead_letter_topic=None)
    return build_pubsub_handler(UploaderConfig.from_values(values), pubsub), values


def _run_work(namespace: argparse.Namespace) -> int:

    subscription = _subscription(namespace)
    values = resolve((*DRAIN_UPLOADER_FLAGS, *PULL_FLAGS), namespace)
    try:
        deployment = PullDeployment(values, subscription)
    except PortInUse:
        raise
    except OSError as exc:
        raise CannotRun(f"cannot start: {exc}") from exc
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return deployment.run(stop)


def _run_replay(namespace: argparse.Namespace) -> int:

    command = namespace.replay_command
    if command == "reconcile":
        return _run_bucket_reconcile(namespace)
    subscription = _subscription(namespace)
    if command == "seek":
        when = _time(namespace.time, "--time")
        subscriber = pubsub_v1.SubscriberClient()
        try:
            replay.seek(subscriber, subscription, when, namespace.snapshot)
        finally:
            subscriber.close()
        print(f"{subscription}: sought to {namespace.time or namespace.snapshot}")
        return 0
    figures = resolve(DRAIN_FLAGS, namespace)  # every setting checked before any client is made
    action: replay.DrainStep | None = None
    if namespace.to_topic:
        topic = check_topic(namespace.to_topic, "to_topic")
        action = replay.republish_to(PubSubPublisher(make_publisher_client(), topic))
    elif namespace.upload:
        handler, _ = _pubsub_handler(namespace, dead_letters=False)
        action = replay.upload_with(handler)
    subscriber = pubsub_v1.SubscriberClient()
    progress = ProgressBar("replay drain", "messages", figures["limit"] or None)
    try:
        summary = replay.drain(
            subscriber,
            subscription,
            action,
            rate=figures["rate"],
            limit=figures["limit"],
            progress=progress,
        )
    finally:
        subscriber.close()
    prefix = "dry run: " if action is None else ""
    print(f"{prefix}{summary.line()}")
    for reason, times in sorted(summary.reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {times} x {reason}")
    return 1 if summary.failed else 0


def _time(text: str | None, flag: str) -> datetime | None:

    try:
        return replay.parse_time(text) if text else None
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from exc


def _run_bucket_reconcile(namespace: argparse.Namespace) -> int:

    values = resolve(BUCKET_RECONCILE_FLAGS, namespace)
    address = values["dicomweb_address"]
    if values["request_deadline"] <= 0:
        raise ConfigError("--request_deadline must be positive")
    session = make_session(values["auth"], values["bearer_token"], values["request_deadline"])
    newer_than = _time(namespace.newer_than, "--newer_than")
    publisher = None
    if not namespace.dry_run:
        if not values["topic"]:
            raise ConfigError("--topic is required, unless --dry_run")
        publisher = PubSubPublisher(make_publisher_client(), check_topic(values["topic"]))
    progress = ProgressBar("replay reconcile", "objects")
    try:
        report = replay.reconcile_bucket(
            storage.Client(),
            values["bucket"],
            values["object_prefix"],
            lambda study: instance_uids(session, address, study),
            publisher,
            called_ae=values["dimse_aet"],
            newer_than=newer_than,
            progress=progress,
        )
    finally:
        progress.close()
    verb = "missing (dry run)" if publisher is None else "published"
    print(
        f"{report.objects} object(s); {report.present} in the DICOM store; {report.published}"
        f" {verb}; {report.unusable} unreadable; {report.failed} not checked or not published"
    )
    return 1 if report.unusable or report.failed else 0


# What else ends a command early: what the error line says first, and the exit status.
FAILURES: tuple[tuple[type[Exception], str, int], ...] = (
    (PortInUse, "", EXIT_PORT_IN_USE),
    (CannotRun, "", EXIT_USAGE),
    (sqlite3.Error, "the queue database cannot be used: ", EXIT_USAGE),
    (GoogleAuthError, "Google credentials: ", EXIT_USAGE),
    (GoogleAPIError, "Google Cloud: ", EXIT_USAGE),
)


def _unknown(parser: argparse.ArgumentParser, extras: Sequence[str]) -> None:
    """Report what the subcommand does not take, with its usage (argparse exits 2)."""
    flag = next((e.partition("=")[0] for e in extras if e.startswith("-")), None)
    if flag is None:
        parser.error(f"unexpected argument {extras[0]!r}")
    known = set(re.findall(r"--[A-Za-z0-9][A-Za-z0-9_-]*", parser.format_help()))
    close = difflib.get_close_matches(flag, sorted(known), n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]}?)" if close else f"; see {parser.prog} --help"
    parser.error(f"unknown flag {flag}{hint}")


def _quiet_closed_pipe() -> int:
    """The reader of our output went away (``| head``): no traceback, nothing more written."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush goes nowhere
    os.close(devnull)
    return EXIT_CLOSED_PIPE


def main(argv: Sequence[str] | None = None, signals: StopSignals | None = None) -> int:
    """The command line; ``signals``: SIGTERM and SIGINT already installed by the entry point
    (``dicom_ingest.__main__``) for the serving commands."""
    namespace, extras = _parser().parse_known_args(argv)
    parser: argparse.ArgumentParser = namespace.command_parser
    if extras:
        _unknown(parser, extras)
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "local": lambda namespace: _run_local(namespace, signals),
        "status": _run_status,
        "reconcile": _run_reconcile,
        "requeue": _run_requeue,
        "receive": lambda namespace: _run_receive(namespace, signals),
        "work": _run_work,
        "replay": _run_replay,
    }
    error = f"{parser.prog}: error:"
    try:
        if hasattr(namespace, "log_format"):  # first, so what follows is logged as asked
            log_settings = resolve(COMMON_FLAGS, namespace)
            logs.configure(log_settings["log_format"], log_settings["verbose"])
        return commands[namespace.command](namespace)
    except ConfigError as exc:
        logs.fatal(f"{error} {exc}", usage=parser.format_usage())
        return EXIT_USAGE
    except BrokenPipeError:
        return _quiet_closed_pipe()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except tuple(kind for kind, _, _ in FAILURES) as exc:
        what, status = next((w, s) for kind, w, s in FAILURES if isinstance(exc, kind))
        logs.fatal(f"{error} {what}{exc}")
        return status


if __name__ == "__main__":
    sys.exit(main())
