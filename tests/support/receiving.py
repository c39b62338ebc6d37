"""What a receiver under test has kept: queued messages and stored objects."""

from __future__ import annotations

from pathlib import Path

from dicom_ingest.local import LocalPipeline


def queued(pipeline: LocalPipeline) -> int:
    stats = pipeline.queue.stats()
    return stats.pending + stats.in_flight + stats.retrying


def stored_objects(pipeline: LocalPipeline) -> list[Path]:
    return sorted(p for p in pipeline.objects.root.rglob("*@*.dcm") if p.is_file())


def staged(pipeline: LocalPipeline) -> list[Path]:
    """Files left in the receiver's staging directory (datasets being received)."""
    return sorted(pipeline.objects.staging_dir().iterdir())
