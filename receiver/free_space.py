"""The free-space guard: an instance is refused with 0xA700 before the spool's disk fills.

The watermark (``--min_free_bytes``, ``--min_free_percent``) is checked with ``statvfs`` on
the staging directory when a C-STORE request arrives, before anything is written, and again
every ``CHECK_EVERY_BYTES`` of its data set while it streams. Below it, the PACS gets
``0xA700`` with a comment saying how much is free and which limit it is under; the rest of
the data set is read and dropped, and the association goes on. A write that fails with
``ENOSPC`` or ``EDQUOT`` gets the same answer. Each check reads the disk as it is (the only
state kept is whether the last one was low, for the log), so the receiver accepts again as
soon as the upload workers have freed space.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# A data set being received is checked again after this many more bytes: one statvfs per
# 4 MiB (at most one a PDU), so a 2 GiB instance costs about 500 system calls.
CHECK_EVERY_BYTES = 4 << 20
_COMMENT_MAX = 64  # Error Comment (0000,0902) is an LO
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: OSError) -> bool:
    """Whether a write failed because the disk (or the user's quota) is full."""
    return exc.errno in _FULL_ERRNOS


def disk_full_comment(exc: OSError) -> str:
    """The Error Comment for a write that found the disk full."""
    return f"Out of resources: spool full ({exc.strerror or os.strerror(exc.errno or 0)})"


@dataclass(frozen=True, slots=True)
class Shortage:
    """The staging disk below its watermark: what is free, and which limit it is under."""

    free: int
    total: int
    flag: str  # "--min_free_bytes" or "--min_free_percent"
    limit: str  # the flag's value, as the operator wrote it

    def comment(self) -> str:
        """The Error Comment of the 0xA700 answer: at most 64 characters."""
        if self.flag == "--min_free_percent":
            share = 100.0 * self.free / self.total if self.total else 0.0
            return f"Out of resources: {share:.1f}% free, below {self.flag}"
        text = f"Out of resources: {self.free} bytes free, below {self.flag}"
        if len(text) > _COMMENT_MAX:
            text = f"Out of resources: {self.free >> 20} MiB free, below {self.flag}"
        return text

    def describe(self) -> str:
        """The longer form, for the log."""
        return (
            f"{self.free} of {self.total} bytes free on the spool's disk,"
            f" below {self.flag} {self.limit}"
        )


class SpaceGuard:
    """Reads the free space of the disk holding ``path`` and compares it with the watermark.

    Shared by every association of a receiver; a check is one ``statvfs``, without locks.
    The first refusal after a healthy check logs one WARNING, the first healthy check after
    refusals one INFO, so a full disk does not log a line per instance twice over.
    """

    def __init__(self, path: Path, min_free_bytes: int, min_free_percent: float) -> None:
        self._path = path
        self._min_bytes = min_free_bytes
        self._min_percent = min_free_percent
        self._low = False
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._min_bytes > 0 or self._min_percent > 0

    def shortage(self) -> Shortage | None:
        """The shortage now, or None when the disk is above the watermark (or unreadable:
        then the write itself reports what is wrong)."""
        if not self.enabled:
            return None
        try:
            fs = os.statvfs(self._path)
        except OSError:
            return None
        free = fs.f_bavail * fs.f_frsize
        total = fs.f_blocks * fs.f_frsize
        found: Shortage | None = None
        if free < self._min_bytes:
            found = Shortage(free, total, "--min_free_bytes", str(self._min_bytes))
        elif total and free * 100 < self._min_percent * total:
            found = Shortage(free, total, "--min_free_percent", f"{self._min_percent:g}")
        self._note(found)
        return found

    def _note(self, found: Shortage | None) -> None:
        if (found is not None) == self._low:
            return
        with self._lock:
            if (found is not None) == self._low:
                return
            self._low = found is not None
        if found is not None:
            log.warning(
                "spool disk below its free-space watermark: refusing instances with 0xA700"
                " until uploads free space (%s)",
                found.describe(),
                extra={"free_bytes": found.free, "total_bytes": found.total, "limit": found.flag},
            )
        else:
            log.info("spool disk back above its free-space watermark: accepting instances")
