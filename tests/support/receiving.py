"""What a receiver under test has kept: queued messages and stored objects."""

from __future__ import annotations

import os
from pathlib import Path

from dicom_ingest.local import LocalPipeline


def queued(pipeline: LocalPipeline) -> int:
    stats = pipeline.queue.stats()
    return stats.pending + stats.in_flight + stats.retrying


def stored_objects(pipeline: LocalPipeline) -> list[Path]:
    return sorted(p for p in pipeline.objects.root.rglob("*@*.dcm") if p.is_file())


def staged(pipeline: LocalPipeline) -> list[Path]:
    """The staging files (datasets being received) of a receiver running in this process,
    and of its receive processes."""
    staging = pipeline.objects.staging_dir()
    found = staging_files(staging)
    for pid in pipeline.receiver.receive_process_ids():
        found += open_anonymous_files(staging, pid)
    return sorted(found)


def staging_files(staging: Path, pid: int | None = None) -> list[Path]:
    """The staging files of a receiver in process pid (this one by default): the files in
    its staging directory, and the anonymous files it has open there."""
    return sorted([*staging.iterdir(), *open_anonymous_files(staging, pid)])


def open_anonymous_files(directory: Path, pid: int | None = None) -> list[Path]:
    """Process pid's (this one's by default) open descriptors of anonymous files made in
    directory."""
    found = []
    for entry in Path(f"/proc/{pid or 'self'}/fd").iterdir():
        try:
            target = os.readlink(entry)
        except OSError:  # closed meanwhile
            continue
        # Linux shows an anonymous file as "<directory>/#<inode> (deleted)".
        if target.startswith(f"{directory}/#") and target.endswith(" (deleted)"):
            found.append(entry)
    return found
