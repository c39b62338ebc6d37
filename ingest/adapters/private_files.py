"""Files that hold patient data: directories 0700, files 0600, whatever the process umask.

A mode given to ``open`` or ``mkdir`` is masked by the umask, which can only remove bits: a
file created 0600 is at most 0600. A directory is set to 0700 after ``mkdir`` as well, so it
is exactly that.
"""

from __future__ import annotations

import contextlib
import errno
import os
import weakref
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


# -- anonymous files ---------------------------------------------------------------------------
# A file made with O_TMPFILE has no name until it is linked into a directory, and vanishes if
# the process dies first. Until then ``/proc/self/fd/<fd>`` names it for this process: open(2)
# documents linking it with linkat(..., AT_SYMLINK_FOLLOW). Such a name is only valid while
# its descriptor is open, and must not outlive it: the number is reused by the next open.

_PROC_FD = Path("/proc/self/fd")
_ANONYMOUS = os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | getattr(os, "O_CLOEXEC", 0)
_proc_fd_dirs: dict[int, int] = {}  # process id → its /proc/self/fd (a fork has its own)
_SUPPORTED = hasattr(os, "O_TMPFILE") and _PROC_FD.is_dir()  # (without /proc: no name)


def create_anonymous_file(directory: Path) -> tuple[int, Path] | None:
    """A new nameless file (mode 0600) on directory's file system, open for writing: its
    descriptor and the name it has while that is open; None where the file system or
    platform has no such files."""
    if not _SUPPORTED:
        return None
    try:
        fd = os.open(directory, _ANONYMOUS, PRIVATE_FILE)
    except OSError as exc:
        # EOPNOTSUPP: the file system has none; EISDIR: the kernel predates them.
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            return None
        raise
    return fd, _PROC_FD / str(fd)


def is_anonymous(path: Path) -> bool:
    """Whether path names an anonymous file by its descriptor."""
    return path.parent == _PROC_FD


def link_anonymous(path: Path, target: Path) -> None:
    """Give the anonymous file named path (still open) the name target (not yet taken)."""
    pid = os.getpid()  # (a fork has other descriptors, and its own /proc/self)
    fd_dir = _proc_fd_dirs.get(pid)
    if fd_dir is None:  # opened once: /proc/self is resolved now, to this process
        opened = os.open(_PROC_FD, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd_dir = _proc_fd_dirs.setdefault(pid, opened)
        if fd_dir != opened:  # another thread's came first
            os.close(opened)
    # Relative to a directory descriptor, so Python calls linkat with AT_SYMLINK_FOLLOW:
    # plain link(2) would link the /proc entry itself, which crosses file systems.
    os.link(path.name, target, src_dir_fd=fd_dir, follow_symlinks=True)


def open_lock_file(path: Path, owner: object) -> int:
    """A private lock file's descriptor (for ``flock``), closed when owner is collected."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    weakref.finalize(owner, os.close, fd)
    return fd
