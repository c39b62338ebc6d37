"""The object store's local adapter: a spool directory of versioned objects.

Every object is written once and named by a key (``<study>/<series>/<sop>.dcm``) and a
generation, the way Cloud Storage names an object version. A reader asks for one exact
generation and is told when it has been superseded, so a message never uploads bytes other
than those it names.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from ingest.contracts.ports import (
    ObjectBusy,
    ObjectMissing,
    ObjectStoreError,
    ObjectSuperseded,
    StoredObject,
)

from .private_files import create_private_file, make_private_dir


def _parse_version(name: str) -> tuple[str, int] | None:
    """``<sop>@<generation>.dcm`` → (sop, generation); None for any other name."""
    stem, at, rest = name.partition("@")
    generation = rest[: -len(".dcm")]
    if at and rest.endswith(".dcm") and generation.isascii() and generation.isdigit():
        return stem, int(generation)
    return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolObjectStore:
    """Objects as files under ``<spool>/objects``, one file per generation.

    A version lives at ``objects/<study>/<series>/<sop>@<generation>.dcm``; the symbolic link
    ``<sop>.dcm`` names the current one and is the object's URI
    (``file://<spool>/objects/<study>/<series>/<sop>.dcm``). Finding the current generation is
    one ``readlink``, however many instances the series holds. A new version is written,
    the link is switched atomically with ``rename``, then the old version is removed.
    """

    def __init__(self, spool_dir: Path) -> None:
        self._root = (spool_dir / "objects").resolve()
        self._inside = os.path.join(self._root, "")  # the root with its separator: a prefix
        self._staging = (spool_dir / "incoming").resolve()
        # Patient data: directories 0700 and files 0600 whatever the umask; the spool's own
        # directories are tightened too when an earlier release left them open.
        make_private_dir(self._root.parent, parents=True, tighten=True)
        make_private_dir(self._root, tighten=True)
        make_private_dir(self._staging, tighten=True)
        _fsync_dir(self._root.parent)
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
        path = os.path.normpath(unquote(parsed.path))
        if not path.startswith(self._inside):
            raise ObjectStoreError(f"object URI outside the spool: {uri}")
        return Path(path)

    @staticmethod
    def _version_path(logical: Path, generation: int | str) -> Path:
        return logical.with_name(f"{logical.stem}@{generation}.dcm")

    @staticmethod
    def _current(logical: Path) -> int | None:
        """The current generation of an object, or None when it does not exist."""
        try:
            target = os.readlink(logical)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:  # EINVAL: a plain file where a link belongs
            raise ObjectStoreError(f"{logical.name} is not an object link") from exc
        version = _parse_version(target)
        if version is None:
            raise ObjectStoreError(f"unexpected link target for {logical.name}")
        return version[1]

    @staticmethod
    def _generations(logical: Path) -> list[int]:
        """Every version of one object on disk, oldest first (a scan of its directory: only
        on the rare paths, a resent instance or a failed store)."""
        with os.scandir(logical.parent) as entries:
            versions = [_parse_version(entry.name) for entry in entries]
        return sorted(v[1] for v in versions if v is not None and v[0] == logical.stem)

    def _logical(self, key: str) -> Path:
        logical = os.path.normpath(os.path.join(self._inside, key))
        if not logical.startswith(self._inside) or not logical.endswith(".dcm"):
            raise ObjectStoreError("object key escapes the spool")
        return Path(logical)

    def _ensure_directories(self, logical: Path) -> None:
        """Create the object's directories durably (caller holds the lock), so no thread can
        answer a PACS for an object in a directory that a power cut could still lose."""
        for directory in (logical.parent.parent, logical.parent):
            if not directory.is_dir():
                make_private_dir(directory)
                _fsync_dir(directory.parent)

    def _next_generation(self, previous: int | None) -> int:
        generation = max(time.time_ns(), self._last_generation + 1, (previous or 0) + 1)
        self._last_generation = generation
        return generation

    def reserve(self, key: str) -> Path:
        """The path of a new version of key, in its final directory: writing it there and
        handing it to ``put`` saves a file creation and a rename per instance. A reserved
        version that never reaches ``put`` is removed by the caller, or by ``prune``."""
        logical = self._logical(key)
        with self._lock:  # created under the lock, so delete cannot remove its directory
            self._ensure_directories(logical)
            generation = self._next_generation(self._current(logical))
            path = self._version_path(logical, generation)
            os.close(create_private_file(path))
        return path

    def put(self, key: str, staged: Path, size: int, crc32c: str) -> StoredObject:
        logical = self._logical(key)
        with open(staged, "rb+") as handle:
            os.fsync(handle.fileno())
        with self._lock:
            self._ensure_directories(logical)
            previous = self._current(logical)
            version = _parse_version(staged.name)
            reserved = (
                version is not None
                and staged.parent == logical.parent
                and version[0] == logical.stem
            )
            generation = version[1] if version is not None and reserved else 0
            if not reserved or (previous is not None and generation <= previous):
                # Written elsewhere, or overtaken by a later reservation of the same key:
                # this version becomes the newest under a fresh generation.
                generation = self._next_generation(previous)
                os.rename(staged, self._version_path(logical, generation))
            self._point(logical, generation, first=previous is None)
        try:
            _fsync_dir(logical.parent)  # outside the lock: concurrent associations overlap
        except OSError:
            with self._lock:  # not durable: undo the switch, so the caller may discard it
                if self._current(logical) == generation:
                    self._point_below(logical, generation)
            raise
        return StoredObject(
            self.uri_for(key),
            str(generation),
            size,
            crc32c,
            None if previous is None else str(previous),
        )

    def _point(self, logical: Path, generation: int | str, first: bool = False) -> None:
        """Atomically make generation the current version (caller holds the lock).

        A ``first`` version (no link yet) gets its link created in place; otherwise a new
        link is renamed over the old one, so readers never see the object missing.
        """
        target = self._version_path(logical, generation).name
        if first:
            try:
                os.symlink(target, logical)
                return
            except FileExistsError:
                pass  # a dangling link left by a crash: replace it below
        link = logical.with_name(f".{logical.name}.{generation}.link")
        link.unlink(missing_ok=True)
        os.symlink(target, link)
        os.rename(link, logical)

    def _point_below(self, logical: Path, generation: int) -> None:
        """Make the newest version older than generation current, or remove the object's
        link when there is none (caller holds the lock)."""
        older = [g for g in self._generations(logical) if g < generation]
        if older:
            self._point(logical, older[-1])
        else:
            logical.unlink(missing_ok=True)

    def commit(self, stored: StoredObject) -> None:
        if stored.previous is None:
            return  # a first version: nothing older to remove (the common case)
        # Only the version this one replaced: each version is removed when its successor
        # commits, so no older one remains (a crash's leftovers go at start-up, in prune).
        # Scanning the directory instead made re-sending a series quadratic in its size.
        logical = self._path_for(stored.uri)
        with self._lock:
            self._version_path(logical, stored.previous).unlink(missing_ok=True)

    def rollback(self, stored: StoredObject) -> None:
        logical = self._path_for(stored.uri)
        ours = int(stored.generation)
        with self._lock:
            if self._current(logical) == ours:
                self._point_below(logical, ours)
                _fsync_dir(logical.parent)
            self._version_path(logical, ours).unlink(missing_ok=True)

    def open(self, uri: str, generation: str) -> BinaryIO:
        logical = self._path_for(uri)
        current = self._current(logical)
        if current is None:
            raise ObjectMissing(f"no object at {uri} generation {generation}")
        if current != int(generation):
            if current < int(generation):
                raise ObjectMissing(f"no generation {generation} at {uri} (current {current})")
            if self._version_path(logical, generation).exists():
                # The newer version's message is not committed yet (commit removes older
                # versions); if it fails, this one becomes current again.
                raise ObjectBusy(f"generation {current} of {uri} is still being stored")
            raise ObjectSuperseded(f"generation {generation} superseded by {current}")
        try:
            return open(self._version_path(logical, generation), "rb")
        except FileNotFoundError as exc:  # replaced between reading the link and opening
            raise ObjectSuperseded(f"generation {generation} was replaced") from exc

    def delete(self, uri: str, generation: str) -> bool:
        logical = self._path_for(uri)
        with self._lock:
            if self._current(logical) != int(generation):
                return False
            logical.unlink()
            self._version_path(logical, generation).unlink(missing_ok=True)
            for directory in (logical.parent, logical.parent.parent):
                try:
                    directory.rmdir()  # only when empty: a finished series, then study
                except OSError:
                    break
        return True

    def current_objects(self) -> Iterator[tuple[StoredObject, Path]]:
        """Every object's current version (size known, checksum not computed: empty)."""
        for directory, _, names in os.walk(self._root):
            for name in names:
                if "@" in name or not name.endswith(".dcm"):
                    continue
                logical = Path(directory) / name
                try:
                    generation = self._current(logical)
                except ObjectStoreError:
                    continue  # not one of ours
                if generation is None:
                    continue
                version = self._version_path(logical, generation)
                try:
                    size = version.stat().st_size
                except FileNotFoundError:
                    continue
                key = str(logical.relative_to(self._root))
                yield StoredObject(self.uri_for(key), str(generation), size, ""), version

    def prune(self) -> int:
        """Remove what a crash can leave behind: versions that are not current (a reserved one
        never stored, or an older one whose replacement's commit did not happen), dangling or
        temporary links.

        Only for a process that owns the spool and before it accepts associations: a version
        being written right now is also unlinked for a moment.
        """
        removed = 0
        for directory, _, names in os.walk(self._root):
            folder = Path(directory)
            current: dict[str, int | None] = {}
            for name in names:
                path = folder / name
                if name.startswith(".") and name.endswith(".link"):
                    path.unlink(missing_ok=True)
                    removed += 1
                elif "@" not in name and name.endswith(".dcm"):
                    try:
                        current[path.stem] = self._current(path)
                    except ObjectStoreError:
                        current[path.stem] = None  # not one of ours: left alone
                        continue
                    if not path.exists():  # a link to a version that is gone
                        path.unlink(missing_ok=True)
                        removed += 1
            for name in names:
                version = _parse_version(name)
                if version is not None and current.get(version[0]) != version[1]:
                    (folder / name).unlink(missing_ok=True)
                    removed += 1
        return removed
