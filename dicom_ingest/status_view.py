"""The status page as HTML: pure functions of a snapshot, every text escaped.

No script, no external resource: the page refreshes itself every few seconds with a meta
refresh, and the only action, requeue, is a plain form carrying the page's CSRF token.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from ingest.adapters.sqlite_queue import DeadLetter, QueueStats, Retrying
from ingest.contracts.message import MessageError, decode

from .recent_associations import AssociationRecord

REFRESH_SECONDS = 5

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.figures { display: flex; gap: 1em; flex-wrap: wrap; }
.figure { border: 1px solid #ccc; border-radius: 6px; padding: .6em 1em; min-width: 7em; }
.figure b { display: block; font-size: 1.6em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .5em; text-align: left;
         vertical-align: top; }
td.uid { font-family: monospace; font-size: 12px; word-break: break-all; }
.notice { background: #eef6ee; border: 1px solid #9c9; padding: .5em 1em; }
.empty { color: #777; }
form { display: inline; }
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the page shows, read at one moment."""

    now: float
    ae_title: str
    dimse_port: int
    stats: QueueStats
    retrying: Sequence[Retrying]
    dead_letters: Sequence[DeadLetter]
    associations: Sequence[AssociationRecord]


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _cell(value: object, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{escape(str(value))}</td>"


def _uids(body: bytes) -> tuple[str, str]:
    """(study, SOP instance) UIDs of a message body, or a note that it cannot be read."""
    try:
        message = decode(body)
    except MessageError as exc:
        return f"unreadable message: {exc}", ""
    return message.study_instance_uid, message.sop_instance_uid


def _table(id_: str, headers: Iterable[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty" id="{id_}">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table id="{id_}"><tr>{head}</tr>{"".join(rows)}</table>'


def _figures(snapshot: Snapshot) -> str:
    stats = snapshot.stats
    figures = [
        ("pending", "waiting for upload", stats.pending),
        ("in-flight", "uploading", stats.in_flight),
        ("retrying", "retrying", stats.retrying),
        ("dead", "dead letters", stats.dead),
        ("oldest", "oldest waiting", _age(stats.oldest_pending_age)),
    ]
    return "".join(
        f'<div class="figure" id="figure-{key}">{escape(label)}<b>{escape(str(value))}</b></div>'
        for key, label, value in figures
    )


def _associations(records: Sequence[AssociationRecord]) -> str:
    rows = [
        "<tr>"
        + _cell(_utc(r.ended_at))
        + _cell(r.peer)
        + _cell(r.calling_ae)
        + _cell(r.called_ae)
        + _cell(r.outcome)
        + _cell(r.instances)
        + _cell(r.failed)
        + _cell(r.bytes)
        + _cell(f"{r.seconds:.2f}")
        + _cell("; ".join(filter(None, (r.reason, r.rejected_contexts))))
        + "</tr>"
        for r in records
    ]
    headers = (
        *("ended", "peer", "calling AE", "called AE", "outcome"),
        *("stored", "failed", "bytes", "seconds", "reason"),
    )
    return _table("associations", headers, rows, "No association since the pipeline started.")


def _retrying(messages: Sequence[Retrying], now: float) -> str:
    rows = []
    for m in messages:
        study, sop = _uids(m.body)
        rows.append(
            "<tr>"
            + _cell(m.message_id)
            + _cell(study, "uid")
            + _cell(sop, "uid")
            + _cell(m.attempts)
            + _cell(_age(max(0.0, m.next_attempt_at - now)))
            + _cell(m.reason)
            + "</tr>"
        )
    headers = ("id", "study", "SOP instance", "attempts", "next attempt in", "last reason")
    return _table("retrying", headers, rows, "Nothing is retrying.")


def _requeue_form(token: str, message_id: str | None) -> str:
    target = (
        '<input type="hidden" name="all" value="1">'
        if message_id is None
        else f'<input type="hidden" name="id" value="{escape(message_id)}">'
    )
    label = "Requeue all" if message_id is None else "Requeue"
    return (
        '<form method="post" action="/requeue">'
        f'<input type="hidden" name="csrf" value="{escape(token)}">{target}'
        f'<button type="submit">{label}</button></form>'
    )


def _dead_letters(letters: Sequence[DeadLetter], token: str) -> str:
    rows = []
    for d in letters:
        study, sop = _uids(d.body)
        rows.append(
            f'<tr id="dead-{escape(d.message_id)}">'
            + _cell(d.message_id)
            + _cell(_utc(d.failed_at))
            + _cell(study, "uid")
            + _cell(sop, "uid")
            + _cell(d.attempts)
            + _cell(d.reason)
            + f"<td>{_requeue_form(token, d.message_id)}</td></tr>"
        )
    headers = ("id", "failed", "study", "SOP instance", "attempts", "reason", "")
    table = _table("dead-letters", headers, rows, "No dead letters.")
    return table + (f"<p>{_requeue_form(token, None)}</p>" if rows else "")


def render(snapshot: Snapshot, token: str, notice: str | None = None) -> str:
    notice_html = f'<p class="notice" id="notice">{escape(notice)}</p>' if notice else ""
    title = f"dicom-ingest: {snapshot.ae_title} on port {snapshot.dimse_port}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}; url=/">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f"<p>As of {escape(_utc(snapshot.now))}; refreshes every {REFRESH_SECONDS} s.</p>"
        f'{notice_html}<div class="figures">{_figures(snapshot)}</div>'
        f"<h2>Recent associations</h2>{_associations(snapshot.associations)}"
        f"<h2>Retrying</h2>{_retrying(snapshot.retrying, snapshot.now)}"
        f"<h2>Dead letters</h2>{_dead_letters(snapshot.dead_letters, token)}"
        "</body></html>"
    )


def render_error(status: int, text: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{status}</title></head><body><h1>{status}</h1><p>{escape(text)}</p>"
        '<p><a href="/">Back to the status page</a></p></body></html>'
    )
