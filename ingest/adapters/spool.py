"""The object store's local adapter: a spool directory of versioned objects.

Every object is written once and named by a key (``<study>/<series>/<sop>.dcm``) and a
generation, the way Cloud Storage names an object version. A reader asks for one exact
generation and is told when it has been superseded, so a message never uploads bytes other
than those it names.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
import weakref
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

from .private_files import (
    create_private_file,
    is_anonymous,
    link_anonymous,
    make_private_dir,
    open_lock_file,
)

log = logging.getLogger(__name__)

LOCK_FILE = "spool.lock"  # in the spool directory, beside objects/ and incoming/


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


class _SpoolLock:
    """The spool's lock: its threads, and every process that has the spool open.

    Creating and removing directories, switching links and removing versions must not
    interleave, whether the other party is a thread (an association, an upload worker) or a
    process (the receive processes of ``--receive_processes``). A thread lock orders this
    process's threads; ``flock`` on the spool's lock file orders the processes.
    """

    def __init__(self, path: Path) -> None:
        self._thread_lock = threading.Lock()
        self._fd = open_lock_file(path, self)  # stores have no close of their own

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class _DirectorySync:
    """One directory's fsync, shared by the threads that need it at once (group commit).

    A change to the directory is durable once an fsync that began after it has finished.
    Threads that link objects into one series at the same time (several associations)
    wait for one fsync between them instead of queueing for one each.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._cond = threading.Condition()
        self._changes = 0  # changes noted so far
        self._durable = 0  # changes an fsync has covered
        self._running = False

    def note(self) -> int:
        """Call right after changing the directory; pass the result to ``sync``."""
        with self._cond:
            self._changes += 1
            return self._changes

    def sync(self, change: int) -> None:
        """Return once change is durable; raise if the fsync that had to cover it failed."""
        with self._cond:
            while self._durable < change:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                covers = self._changes
                self._cond.release()
                try:
                    _fsync_dir(self._path)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                self._durable = max(self._durable, covers)


class SpoolObjectStore:
    """Objects as files under ``<spool>/objects``, one file per generation.

    A version lives at ``objects/<study>/<series>/<sop>@<generation>.dcm``; ``<sop>.dcm``, a
    hard link to the current one, is the object's URI
    (``file://<spool>/objects/<study>/<series>/<sop>.dcm``). A new version is written, the
    link is switched atomically with ``rename``, then the old version is removed.

    A hard link takes no inode of its own, so an instance costs one inode allocation, not
    two (a symbolic link is an inode; file systems without a journal search past every
    recently freed inode for each one). Whether a message's generation is current is one
    ``stat`` of each name, compared by inode, however many instances the series holds; only
    the rare paths (an instance received again, a failed store) look through the directory
    for the generation a link names. Symbolic links written by earlier releases still name
    their version and are replaced by hard links as the object changes.
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
        self._lock = _SpoolLock(self._root.parent / LOCK_FILE)
        self._last_generation = 0
        # A series directory's shared fsync while some thread needs it (weak: forgotten after).
        self._syncs: weakref.WeakValueDictionary[Path, _DirectorySync] = (
            weakref.WeakValueDictionary()
        )

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

    @property
    def uri_prefix(self) -> str:
        """What every URI of this spool's objects starts with."""
        return self._root.as_uri() + "/"

    def adopt_uri(self, uri: str) -> str | None:
        """This spool's URI for an object a message names under another spool directory: the
        spool was moved or restored elsewhere, and its queue came with it. None when ``uri``
        is already this spool's, or is not a spool object URI (``objects/<study>/<series>/
        <name>.dcm`` under some directory).
        """
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            return None
        parts = unquote(parsed.path).split("/")
        if len(parts) < 5 or parts[-4] != "objects" or not parts[-1].endswith(".dcm"):
            return None
        if any(part in ("", ".", "..") for part in parts[-3:]):
            return None
        key = "/".join(parts[-3:])
        try:
            self._logical(key)  # refuses a key that would leave the spool
        except ObjectStoreError:
            return None
        adopted = self.uri_for(key)
        return None if adopted == uri else adopted

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
        """The current generation of an object, or None when it does not exist. Free when
        it does not exist (the common case: a first version); otherwise a look through the
        object's directory (an instance received again, a failed store)."""
        try:
            found = os.lstat(logical)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(found.st_mode):  # written by an earlier release
            version = _parse_version(os.readlink(logical))
            if version is None:
                raise ObjectStoreError(f"unexpected link target for {logical.name}")
            return version[1]
        if stat.S_ISREG(found.st_mode):
            prefix = f"{logical.stem}@"
            names = [logical.name, *(n for n in os.listdir(logical.parent) if n.startswith(prefix))]
            generation = _linked_versions(logical.parent, names)[logical.stem][0]
            if generation is not None:
                return generation
        raise ObjectStoreError(f"{logical.name} is not an object link")

    @staticmethod
    def _names(logical: Path, version: os.stat_result) -> bool:
        """Whether the object's link names this version (compared by inode)."""
        try:
            current = os.stat(logical)  # a symbolic link of an earlier release is followed
        except (FileNotFoundError, NotADirectoryError):
            return False
        return (current.st_ino, current.st_dev) == (version.st_ino, version.st_dev)

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
        version that never reaches ``put`` is removed by the caller, or by ``prune``.
        Its generation comes from the clock; ``put`` renames it in the rare case that the
        object already has a later one."""
        logical = self._logical(key)
        with self._lock:
            self._ensure_directories(logical)
            path = self._version_path(logical, self._next_generation(None))
        try:
            # Outside the lock: allocating the inode is the costly part, and concurrent
            # associations overlap in it. Once the file exists, delete cannot remove its
            # directory (rmdir removes only an empty one).
            os.close(create_private_file(path))
        except FileNotFoundError:  # delete removed the emptied directory just before
            with self._lock:
                self._ensure_directories(logical)
                os.close(create_private_file(path))
        return path

    def put(self, key: str, staged: Path, size: int, crc32c: str) -> StoredObject:
        logical = self._logical(key)
        # The data is durable before any link names it: start-up reconciliation re-enqueues
        # every linked version, so a link written first could, after a power cut, name a
        # truncated file that would then be uploaded. (Linking first would save one of the
        # two synchronous writes per instance on ext4; it is not worth that.)
        fd = os.open(staged, os.O_RDONLY | os.O_CLOEXEC)  # (no buffered file: fewer syscalls)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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
                if is_anonymous(staged):  # a file with no name yet: linked, not renamed
                    link_anonymous(staged, self._version_path(logical, generation))
                else:
                    os.rename(staged, self._version_path(logical, generation))
            self._point(logical, generation, first=previous is None)
            directory = self._syncs.get(logical.parent)
            if directory is None:
                directory = self._syncs[logical.parent] = _DirectorySync(logical.parent)
            change = directory.note()
        try:
            directory.sync(change)  # outside the lock: concurrent associations share it
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
        target = self._version_path(logical, generation)
        if first:
            try:
                os.link(target, logical)
                return
            except FileExistsError:
                pass  # a name that is not one of ours: replace it below
        link = logical.with_name(f".{logical.name}.{generation}.link")
        link.unlink(missing_ok=True)
        os.link(target, link)
        os.rename(link, logical)
        link.unlink(missing_ok=True)  # rename leaves it when both already named one file

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

    def _is_current(self, logical: Path, generation: int | str) -> bool:
        try:
            version = os.stat(self._version_path(logical, generation))
        except (FileNotFoundError, NotADirectoryError):
            return False
        if self._names(logical, version):
            return True
        try:  # not the same inode: another version, or a copy that lost its hard link
            return self._current(logical) == int(generation)
        except ObjectStoreError:
            return False

    def rollback(self, stored: StoredObject) -> None:
        logical = self._path_for(stored.uri)
        ours = int(stored.generation)
        with self._lock:
            if self._is_current(logical, ours):
                self._point_below(logical, ours)
                _fsync_dir(logical.parent)
            self._version_path(logical, ours).unlink(missing_ok=True)

    def open(self, uri: str, generation: str) -> BinaryIO:
        logical = self._path_for(uri)
        try:
            handle = open(self._version_path(logical, generation), "rb")  # noqa: SIM115 - returned
        except (FileNotFoundError, NotADirectoryError):
            pass
        else:
            try:
                if self._names(logical, os.fstat(handle.fileno())):
                    return handle  # the common case: two stats, no directory listing
            except BaseException:
                handle.close()
                raise
            handle.close()
        # Not current, or gone: say why.
        current = self._current(logical)
        if current is None:
            raise ObjectMissing(f"no object at {uri} generation {generation}")
        if current < int(generation):
            raise ObjectMissing(f"no generation {generation} at {uri} (current {current})")
        if current == int(generation):  # a copy that lost its link, or a store undone meanwhile
            try:
                return open(self._version_path(logical, generation), "rb")
            except FileNotFoundError as exc:
                raise ObjectSuperseded(f"generation {generation} was replaced") from exc
        if self._version_path(logical, generation).exists():
            # The newer version's message is not committed yet (commit removes older
            # versions); if it fails, this one becomes current again.
            raise ObjectBusy(f"generation {current} of {uri} is still being stored")
        raise ObjectSuperseded(f"generation {generation} superseded by {current}")

    def delete(self, uri: str, generation: str) -> bool:
        logical = self._path_for(uri)
        with self._lock:
            if not self._is_current(logical, generation):
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
            folder = Path(directory)
            for stem, (generation, size, _) in _linked_versions(folder, names).items():
                if generation is None:
                    continue  # not one of ours, or its version is gone
                key = str((folder / f"{stem}.dcm").relative_to(self._root))
                version = self._version_path(folder / f"{stem}.dcm", generation)
                yield StoredObject(self.uri_for(key), str(generation), size, ""), version

    def prune(self) -> int:
        """Remove what a crash can leave behind: versions that are not current (a reserved one
        never stored, or an older one whose replacement's commit did not happen), dangling or
        temporary links. A spool copied without its hard links (``rsync -a`` without ``-H``)
        has its links made again; versions of an object whose current one cannot be told are
        kept, never removed.

        Only for a process that owns the spool and before it accepts associations: a version
        being written right now is also unlinked for a moment.
        """
        removed = relinked = 0
        for directory, _, found in os.walk(self._root):
            folder = Path(directory)
            names = []
            for name in found:
                if name.startswith(".") and name.endswith(".link"):
                    (folder / name).unlink(missing_ok=True)
                    removed += 1
                else:
                    names.append(name)
            current = _linked_versions(folder, names)
            undecided: set[str] = set()
            for stem, (generation, _, copied) in current.items():
                logical = folder / f"{stem}.dcm"
                if generation is None and logical.is_symlink() and not logical.exists():
                    logical.unlink(missing_ok=True)  # a link to a version that is gone
                    removed += 1
                elif generation is None:
                    undecided.add(stem)  # not one of ours, or a copy we cannot match
                elif copied:
                    self._point(logical, generation)  # a hard link again
                    relinked += 1
            for name in names:
                version = _parse_version(name)
                if version is None or version[0] in undecided:
                    continue
                if current.get(version[0], (None, 0, False))[0] != version[1]:
                    (folder / name).unlink(missing_ok=True)
                    removed += 1
        if relinked:  # one line, however many objects the copy held
            log.info(
                "%d object links made again (the spool was copied without hard links)", relinked
            )
        return removed


def _copy_of(link: os.stat_result, versions: list[tuple[int, os.stat_result]]) -> int | None:
    """The generation a link names when it is a copy, not a hard link (a spool copied by a
    tool that does not keep hard links): the one version of its object with its size, when
    there is exactly one; None when that cannot be told."""
    if link.st_nlink != 1 or len(versions) != 1:
        return None
    generation, version = versions[0]
    return generation if version.st_size == link.st_size else None


def _linked_versions(folder: Path, names: list[str]) -> dict[str, tuple[int | None, int, bool]]:
    """For each object link among ``names`` in folder: the generation it names, that
    version's size, and whether the link is a copy rather than a hard link (see
    ``_copy_of``); (None, 0, False) when it names none (not one of ours, a version gone).

    One ``stat`` per name: a directory's objects are matched in one pass, not one listing
    per object.
    """
    versions: dict[tuple[int, int], tuple[str, int, int]] = {}
    by_object: dict[str, list[tuple[int, os.stat_result]]] = {}
    links: list[str] = []
    for name in names:
        parsed = _parse_version(name)
        if parsed is not None:
            try:
                found = os.lstat(folder / name)
            except FileNotFoundError:
                continue
            versions[(found.st_ino, found.st_dev)] = (parsed[0], parsed[1], found.st_size)
            by_object.setdefault(parsed[0], []).append((parsed[1], found))
        elif name.endswith(".dcm") and not name.startswith("."):
            links.append(name)
    linked: dict[str, tuple[int | None, int, bool]] = {}
    for name in links:
        stem = name[: -len(".dcm")]
        try:
            found = os.stat(folder / name)  # a symbolic link of an earlier release: followed
        except FileNotFoundError:  # a symbolic link to a version that is gone
            linked[stem] = (None, 0, False)
            continue
        match = versions.get((found.st_ino, found.st_dev))
        if match is not None and match[0] == stem:
            linked[stem] = (match[1], match[2], False)
            continue
        copied = None if os.path.islink(folder / name) else _copy_of(found, by_object.get(stem, []))
        linked[stem] = (copied, found.st_size, True) if copied is not None else (None, 0, False)
    return linked
