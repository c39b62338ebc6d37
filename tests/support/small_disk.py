"""A small filesystem of its own for a spool, so a test can fill it: a tmpfs, else an image.

Mounting needs root (CI runs the tests as root). Without it, or when neither a tmpfs nor a
loop-mounted ext4 image can be mounted, the test fails and says why: a full-disk test that
quietly ran on the machine's own disk would prove nothing, and could fill it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size_mib: int) -> Iterator[Path]:
    """A filesystem of ``size_mib`` MiB mounted at ``mount_point``; unmounted on exit."""
    if os.geteuid() != 0:
        pytest.fail("a full-disk test mounts a small filesystem, which needs root (as in CI)")
    mount_point.mkdir(parents=True, exist_ok=True)
    tmpfs = _run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs"], mount_point
    )
    image: Path | None = None
    if tmpfs is not None:
        image = mount_point.with_name(mount_point.name + ".img")
        with open(image, "wb") as handle:
            handle.truncate(size_mib << 20)
        made = _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], None)
        loop = made or _run(["mount", "-o", "loop", str(image)], mount_point)
        if loop is not None:
            image.unlink()
            pytest.fail(f"cannot mount a small filesystem: tmpfs: {tmpfs}; loop image: {loop}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, capture_output=True)
        if image is not None:
            image.unlink(missing_ok=True)


def _run(command: list[str], mount_point: Path | None) -> str | None:
    """Run a command (with the mount point last, if any); its error text, or None."""
    args = [*command, str(mount_point)] if mount_point is not None else command
    result = subprocess.run(args, check=False, capture_output=True, text=True)
    return (
        None if result.returncode == 0 else (result.stderr.strip() or f"exit {result.returncode}")
    )


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Write a file at ``path`` until its filesystem has at most ``leave`` bytes free."""
    chunk = b"\0" * (1 << 20)
    with open(path, "ab", buffering=0) as handle:
        while (room := free_bytes(path.parent) - leave) > 0:
            try:
                handle.write(chunk[: min(room, len(chunk))])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return path
