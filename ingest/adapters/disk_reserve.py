"""Room kept on a disk for the work that frees it: a preallocated file, released when full.

The local queue lives on the spool's disk. When that disk fills (the receiver's watermark
keeps it from doing so, but other writers may not), SQLite cannot commit even a delete:
it needs new pages in its write-ahead log first. Then no upload could be acknowledged and no
object removed, and the disk would stay full for good. So the queue keeps a reserve file
next to its database. When a commit that frees space (an acknowledgement, a retry, a dead
letter) fails with "database or disk is full", the reserve is removed and the commit tried
again; once the disk has room again the reserve is put back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from .private_files import create_private_file

log = logging.getLogger(__name__)

RESERVE_SUFFIX = ".reserve"
DEFAULT_RESERVE_BYTES = 8 << 20
# A released reserve is put back when this many times its size is free, checked at most
# once per RESTORE_INTERVAL seconds (one statvfs).
_RESTORE_HEADROOM = 4
RESTORE_INTERVAL = 2.0


class DiskReserve:
    """A file of ``size`` bytes, allocated on the disk, that can be given up in one unlink."""

    def __init__(self, path: Path, size: int = DEFAULT_RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        self._next_restore = 0.0

    @classmethod
    def beside(cls, database: Path, size: int = DEFAULT_RESERVE_BYTES) -> DiskReserve:
        """The reserve of a database file: ``<database>.reserve`` in its directory."""
        return cls(database.with_name(database.name + RESERVE_SUFFIX), size)

    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def release(self) -> bool:
        """Give the reserve's space back to the disk; False when there was none to give."""
        if not self.held():
            return False
        self.path.unlink(missing_ok=True)
        log.warning(
            "disk full: released the queue's %d-byte reserve so uploads can be settled and"
            " free space",
            self.size,
            extra={"reserve": str(self.path)},
        )
        return True

    def restore(self, force: bool = False) -> bool:
        """Allocate the reserve again if it is missing and the disk has room; True if held.

        Without ``force``, at most once per ``RESTORE_INTERVAL``: it is called after commits.
        """
        now = time.monotonic()
        if not force and now < self._next_restore:
            return False
        self._next_restore = now + RESTORE_INTERVAL
        if self.held():
            return True
        try:
            fs = os.statvfs(self.path.parent)
            if fs.f_bavail * fs.f_frsize < _RESTORE_HEADROOM * self.size:
                return False
            self.path.unlink(missing_ok=True)  # a short one from an interrupted allocation
            fd = create_private_file(self.path)
            try:
                os.posix_fallocate(fd, 0, self.size)  # blocks really allocated, not a hole
            finally:
                os.close(fd)
        except OSError:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
            return False
        if not force:
            log.info("disk has room again: the queue's reserve is back")
        return True
