"""The files datasets are written to as they arrive, before the object store takes them.

Where the object store links staged files into place (the spool) and nothing else reads
them by name, they are anonymous: created with no name, given one only by the store, and
gone with the process if it dies first. That spares each instance a file name in the
staging directory, and with it a directory write on some file systems (ext4 without a
journal writes a new file's directory with the file's first fsync) and the lock that
concurrent associations take on that directory. Elsewhere (early uploads read staging files
by name while they grow) and on file systems without anonymous files, each file gets a
random name in the staging directory, removed when its dataset is stored or dropped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from ingest.adapters.private_files import create_anonymous_file, create_private_file

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StagingFile:
    fd: int  # open for writing; the caller closes it
    path: Path  # for an anonymous file, valid only while fd is open
    named: bool  # the caller removes a named file it does not hand on


class StagingFiles:
    def __init__(self, directory: Path, anonymous: bool = False) -> None:
        self._directory = directory
        self._anonymous = anonymous

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
