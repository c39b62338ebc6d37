"""The object store port and its local adapter: a spool directory of versioned objects.

Every object is written once and named by a key (``<study>/<series>/<sop>.dcm``) and a
generation, the way Cloud Storage names an object version. A reader asks for one exact
generation and is told when it has been superseded, so a message never uploads bytes other
than those it names.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlparse


class ObjectStoreError(Exception):
    """Base class of object store failures."""


class ObjectMissing(ObjectStoreError):
    """No version of the object exists any more."""


class ObjectSuperseded(ObjectStoreError):
    """The requested generation has been replaced by a newer one."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A durably stored object version."""

    uri: str
    generation: str
    size: int
    crc32c: str


class ObjectStore(Protocol):
    """Where the receiver puts instances and the uploader reads them."""

    def put(self, key: str, staged: Path, size: int, crc32c: str) -> StoredObject:
        """Store the staged file under key as a new generation; durable on return.

        The staged file is consumed (moved or deleted) on success.
        """
        ...

    def staging_dir(self) -> Path:
        """A directory where the receiver may stage files for ``put``."""
        ...

    def open(self, uri: str, generation: str) -> BinaryIO:
        """Open exactly that generation for streaming reads."""
        ...

    def delete(self, uri: str, generation: str) -> bool:
        """Delete that generation if it is still current; True if deleted."""
        ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolObjectStore:
    """Objects as files under ``<spool>/objects``, one file per generation.

    A version lives at ``objects/<study>/<series>/<sop>@<generation>.dcm``; the object URI is
    ``file://<spool>/objects/<study>/<series>/<sop>.dcm``. Older versions are removed when a
    newer one is written.
    """

    def __init__(self, spool_dir: Path) -> None:
        self._root = (spool_dir / "objects").resolve()
        self._staging = (spool_dir / "incoming").resolve()
        self._root.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last_generation = 0

    @property
    def root(self) -> Path:
        return self._root

    def staging_dir(self) -> Path:
        return self._staging

    def clear_staging(self) -> int:
        """Remove files left in staging by a previous process; returns how many."""
        count = 0
        for entry in self._staging.iterdir():
            if entry.is_file():
                entry.unlink(missing_ok=True)
                count += 1
        return count

    def uri_for(self, key: str) -> str:
        return (self._root / key).as_uri()

    def _path_for(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise ObjectStoreError(f"not a spool object URI: {uri}")
        path = Path(unquote(parsed.path)).resolve()
        if self._root not in path.parents:
            raise ObjectStoreError(f"object URI outside the spool: {uri}")
        return path

    @staticmethod
    def _versions(logical: Path) -> dict[int, Path]:
        stem = logical.stem
        found: dict[int, Path] = {}
        if not logical.parent.is_dir():
            return found
        for candidate in logical.parent.glob(f"{stem}@*.dcm"):
            gen = candidate.name[len(stem) + 1 : -len(".dcm")]
            if gen.isascii() and gen.isdigit():
                found[int(gen)] = candidate
        return found

    def put(self, key: str, staged: Path, size: int, crc32c: str) -> StoredObject:
        logical = self._root / key
        if self._root not in logical.resolve().parents:
            raise ObjectStoreError("object key escapes the spool")
        with open(staged, "rb+") as handle:
            os.fsync(handle.fileno())
        created = not logical.parent.is_dir()
        logical.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            existing = self._versions(logical)
            generation = max(
                [time.time_ns(), self._last_generation + 1, *(g + 1 for g in existing)]
            )
            self._last_generation = generation
            target = logical.with_name(f"{logical.stem}@{generation}.dcm")
            os.rename(staged, target)
        _fsync_dir(logical.parent)
        if created:
            _fsync_dir(logical.parent.parent)
            _fsync_dir(logical.parent.parent.parent)
        for old in existing.values():
            old.unlink(missing_ok=True)
        return StoredObject(self.uri_for(key), str(generation), size, crc32c)

    def open(self, uri: str, generation: str) -> BinaryIO:
        logical = self._path_for(uri)
        versions = self._versions(logical)
        wanted = int(generation)
        newer = [g for g in versions if g > wanted]
        if newer:
            raise ObjectSuperseded(f"generation {generation} superseded by {max(newer)}")
        path = versions.get(wanted)
        if path is None:
            raise ObjectMissing(f"no object at {uri} generation {generation}")
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:  # replaced between listing and opening
            raise ObjectSuperseded(f"generation {generation} was replaced") from exc

    def delete(self, uri: str, generation: str) -> bool:
        logical = self._path_for(uri)
        with self._lock:
            versions = self._versions(logical)
            wanted = int(generation)
            if wanted not in versions or any(g > wanted for g in versions):
                return False
            versions[wanted].unlink(missing_ok=True)
        return True
