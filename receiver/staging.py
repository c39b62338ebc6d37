"""The files datasets are written to as they arrive, before the object store takes them.

Where the object store links staged files into place (the spool) and nothing else reads
them by name, they are anonymous: created with no name, given one only by the store, and
gone with the process if it dies first. That spares each instance a file name in the
staging directory, and with it a directory write on some file systems (ext4 without a
journal writes a new file's directory with the file's first fsync) and the lock that
concurrent associations take on that directory. Elsewhere (early uploads read staging files
by name while they grow) and on file systems without anonymous files, each file gets a
random name in the staging directory, removed when its dataset is stored or dropped.

A file the store will fsync (the spool's) is also written back to disk as it arrives, in the
background (``sync_file_range``): the fsync before the PACS is answered then waits mostly for
the last part of the instance and the metadata, not for the whole of it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest.adapters.private_files import create_anonymous_file, create_private_file

log = logging.getLogger(__name__)

WRITE_BACK_EVERY = 128 * 1024  # bytes of a dataset arrived between two write-back starts
_SYNC_FILE_RANGE_WRITE = 2  # start writing dirty pages back; wait for nothing


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range`` (the os module has no such call); None elsewhere."""
    try:
        # The C library is already loaded: look the call up among the loaded symbols.
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_start_write_back = _sync_file_range()


def start_write_back(fd: int) -> None:
    """Start writing the file's dirty pages to disk, without waiting. A hint: the fsync
    that follows reports any error, so none is raised here."""
    if _start_write_back is not None:
        _start_write_back(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # 0, 0: the whole file


@dataclass(frozen=True, slots=True)
class StagingFile:
    fd: int  # open for writing; the caller closes it
    path: Path  # for an anonymous file, valid only while fd is open
    named: bool  # the caller removes a named file it does not hand on


class StagingFiles:
    def __init__(self, directory: Path, anonymous: bool = False) -> None:
        """``anonymous``: for a store that links the file into place, and fsyncs it first
        (the spool); its data is then also written back as it arrives."""
        self._directory = directory
        self._anonymous = anonymous
        self.write_back = anonymous

    def create(self) -> StagingFile:
        """A new, empty staging file, mode 0600 whatever the umask: it holds patient data
        from its first byte."""
        if self._anonymous:
            made = create_anonymous_file(self._directory)
            if made is not None:
                return StagingFile(made[0], made[1], named=False)
            self._anonymous = False
            log.info("staging files are named: the file system has no anonymous files")
        path = self._directory / f"{uuid.uuid4().hex}.dcm"
        return StagingFile(create_private_file(path), path, named=True)

    def remove(self, staged: StagingFile) -> None:
        """Remove a file that was not handed on; its descriptor is closed already."""
        if staged.named:
            # Missing when the store took it after all (renamed into place).
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged.path)
