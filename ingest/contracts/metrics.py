"""The pipeline's Prometheus metrics: one registry, one catalogue, recorded where things happen.

Counters and histograms are process-wide and recorded by the code that sees the event (the
association, the upload service, the queue workers). Figures that are a state rather than
an event (queue depth, free spool space, store reachability) are read when ``/metrics`` is
scraped, from the sources a running pipeline registers with ``ScrapeFigures``: no thread
keeps them up to date. Labels are small fixed sets, never UIDs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

# Not the library's global registry: only what this catalogue declares is served.
REGISTRY = CollectorRegistry(auto_describe=False)

# How an association ended, as its log line says it, with "_" for spaces.
ASSOCIATION_OUTCOMES = (
    "released",
    "rejected",
    "aborted",
    "aborted_by_peer",
    "timed_out",
    "closed",
    "refused",
    "evicted",
    "aborted_at_shutdown",
)
UPLOAD_OUTCOMES = ("done", "retry", "dead", "conflict", "split", "superseded", "skipped")
EARLY_UPLOAD_OUTCOMES = ("used", "not_used", "cancelled", "abandoned")
QUEUE_STATES = ("ready", "leased", "retrying", "dead")

# Receiving one instance: milliseconds for small ones, minutes for a whole slide.
_RECEIVE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_STOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

ASSOCIATIONS = Counter(
    "dicom_ingest_associations",
    "Associations by how they ended",
    ["outcome"],
    registry=REGISTRY,
)
INSTANCES_RECEIVED = Counter(
    "dicom_ingest_instances_received",
    "C-STORE requests answered, by DIMSE status (0x0000 is success)",
    ["status"],
    registry=REGISTRY,
)
RECEIVED_BYTES = Counter(
    "dicom_ingest_received_bytes",
    "Data set bytes of C-STORE requests answered, by DIMSE status",
    ["status"],
    registry=REGISTRY,
)
RECEIVE_SECONDS = Histogram(
    "dicom_ingest_receive_seconds",
    "From a C-STORE request's command to its response sent",
    buckets=_RECEIVE_BUCKETS,
    registry=REGISTRY,
)
UPLOADS = Counter(
    "dicom_ingest_uploads",
    "Upload outcomes per instance message",
    ["outcome"],
    registry=REGISTRY,
)
STOW_SECONDS = Histogram(
    "dicom_ingest_stow_seconds",
    "One STOW-RS request to the DICOM store, bodies included",
    buckets=_STOW_BUCKETS,
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "dicom_ingest_dead_letters",
    "Messages dead-lettered (each with its reason in an ERROR log line)",
    registry=REGISTRY,
)
EARLY_UPLOADS = Counter(
    "dicom_ingest_early_uploads",
    "Uploads to Cloud Storage started while the instance was still arriving, by outcome",
    ["outcome"],
    registry=REGISTRY,
)
for _outcome in ASSOCIATION_OUTCOMES:
    ASSOCIATIONS.labels(_outcome)
for _outcome in UPLOAD_OUTCOMES:
    UPLOADS.labels(_outcome)
for _outcome in EARLY_UPLOAD_OUTCOMES:
    EARLY_UPLOADS.labels(_outcome)
INSTANCES_RECEIVED.labels("0x0000")
RECEIVED_BYTES.labels("0x0000")


def dimse_status(status: int) -> str:
    """A DIMSE status as its label: ``0xA700``."""
    return f"0x{status:04X}"


def association_outcome(outcome: str) -> str:
    """An association's outcome as its label: ``aborted by peer`` → ``aborted_by_peer``."""
    return outcome.replace(" ", "_")


# Where a receive process's figures go instead of its own registry: to the process that
# serves /metrics (``receiver.processes``). None: recorded here.
_forward: Callable[[str, tuple[object, ...]], None] | None = None


def forward_receiver_figures(send: Callable[[str, tuple[object, ...]], None] | None) -> None:
    """Send this process's receiver figures to ``send(kind, args)``; the receiving process
    passes them to ``record``. None records them here again."""
    global _forward  # noqa: PLW0603 - one process-wide switch, set once at start-up
    _forward = send


def record_instance(status: int, size: int, seconds: float) -> None:
    """One C-STORE request answered."""
    if _forward is not None:
        _forward("instance", (status, size, seconds))
        return
    label = dimse_status(status)
    INSTANCES_RECEIVED.labels(label).inc()
    RECEIVED_BYTES.labels(label).inc(size)
    RECEIVE_SECONDS.observe(seconds)


def record_association(outcome: str) -> None:
    """One association ended, as its log line says (``aborted by peer``)."""
    if _forward is not None:
        _forward("association", (outcome,))
        return
    ASSOCIATIONS.labels(association_outcome(outcome)).inc()


def record(kind: str, args: tuple[object, ...]) -> None:
    """A figure forwarded by a receive process, recorded in this one's registry."""
    if kind == "instance":
        status, size, seconds = args
        assert isinstance(status, int) and isinstance(size, int)
        assert isinstance(seconds, float)
        record_instance(status, size, seconds)
    elif kind == "association":
        record_association(str(args[0]))


class QueueFigures(Protocol):
    """What the local queue's ``stats()`` returns (``ingest.adapters.sqlite_queue``)."""

    @property
    def pending(self) -> int: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def retrying(self) -> int: ...
    @property
    def dead(self) -> int: ...
    @property
    def oldest_pending_age(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class ScrapeFigures(Collector):
    """The figures read at scrape time from a running pipeline's parts (each optional)."""

    queue: Callable[[], QueueFigures] | None = None
    spool_dir: Path | None = None
    shipper_backlog: Callable[[], int] | None = None
    store_reachable: Callable[[], bool | None] | None = None

    def collect(self) -> Iterable[Metric]:
        return list(self._figures())

    def _figures(self) -> Iterator[Metric]:
        if self.queue is not None:
            stats = self.queue()
            messages = GaugeMetricFamily(
                "dicom_ingest_queue_messages",
                "Messages in the local queue by state",
                labels=["state"],
            )
            counts = (stats.pending, stats.in_flight, stats.retrying, stats.dead)
            for state, count in zip(QUEUE_STATES, counts, strict=True):
                messages.add_metric([state], count)
            yield messages
            yield GaugeMetricFamily(
                "dicom_ingest_queue_oldest_age_seconds",
                "Age of the oldest message not yet settled (0 when none)",
                value=stats.oldest_pending_age or 0.0,
            )
        if self.spool_dir is not None:
            try:
                free = shutil.disk_usage(self.spool_dir).free
            except OSError:
                free = None  # no figure rather than a wrong one
            if free is not None:
                yield GaugeMetricFamily(
                    "dicom_ingest_spool_free_bytes",
                    "Free bytes on the spool directory's file system",
                    value=free,
                )
        if self.shipper_backlog is not None:
            yield GaugeMetricFamily(
                "dicom_ingest_shipper_backlog",
                "Received instances not yet in Cloud Storage and Pub/Sub",
                value=self.shipper_backlog(),
            )
        if self.store_reachable is not None:
            reachable = self.store_reachable()
            if reachable is not None:  # not probed yet
                yield GaugeMetricFamily(
                    "dicom_ingest_store_reachable",
                    "1 when the DICOM store answered its last probe (QIDO-RS) or upload, else 0",
                    value=1 if reachable else 0,
                )


class Exposition:
    """``/metrics``: the registry plus the figures of whatever pipeline parts are running."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, figures: ScrapeFigures | None = None) -> None:
        self._figures = figures

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Delegate(REGISTRY))
        if self._figures is not None:
            registry.register(self._figures)
        return generate_latest(registry)


@dataclass(frozen=True, slots=True)
class _Delegate(Collector):
    registry: CollectorRegistry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()
