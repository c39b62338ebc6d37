"""Files that hold patient data: directories 0700, files 0600, whatever the process umask.

A mode given to ``open`` or ``mkdir`` is masked by the umask, which can only remove bits: a
file created 0600 is at most 0600. A directory is set to 0700 after ``mkdir`` as well, so it
is exactly that.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def make_private_dir(path: Path, *, parents: bool = False, tighten: bool = False) -> None:
    """Create ``path`` (and, with ``parents``, its missing parents) with mode 0700.

    An existing directory is left as it is, unless ``tighten``: then it is made 0700 when this
    process may change its mode (a directory of an earlier release, say), and kept otherwise
    (a volume mounted by someone else).
    """
    try:
        path.mkdir(mode=PRIVATE_DIR)
    except FileNotFoundError:
        if not parents or path.parent == path:
            raise
        make_private_dir(path.parent, parents=True)
        make_private_dir(path, tighten=tighten)
        return
    except FileExistsError:
        if not path.is_dir():
            raise
        if tighten:
            with contextlib.suppress(PermissionError):
                path.chmod(PRIVATE_DIR)
        return
    path.chmod(PRIVATE_DIR)


def create_private_file(path: Path) -> int:
    """A new file (never an existing one) with mode 0600, open for writing; returns its fd."""
    return os.open(path, _CREATE, PRIVATE_FILE)


def tighten_file(path: Path) -> None:
    """Make an existing file 0600 where this process may; a missing file is no error."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        path.chmod(PRIVATE_FILE)
