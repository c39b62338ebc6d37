"""What ``logs.configure`` changes process-wide, put back as it was.

The CLI configures logging once per process; a test that runs it in-process (or configures
logging itself) must not leave pytest's own hooks for warnings, thread exceptions and
unraisable exceptions replaced for the tests after it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def preserved_hooks() -> Iterator[None]:
    """Warnings capture and the three exception hooks (pytest installs these once per run)."""
    excepthook, thread_hook, unraisable = sys.excepthook, threading.excepthook, sys.unraisablehook
    try:
        yield
    finally:
        logging.captureWarnings(False)  # a no-op unless something turned it on
        sys.excepthook, threading.excepthook = excepthook, thread_hook
        sys.unraisablehook = unraisable


@contextlib.contextmanager
def preserved_logging() -> Iterator[None]:
    """The hooks and the root logger's handlers and levels, within one phase of a test
    (pytest swaps its capture handlers between setup, call and teardown)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    pynetdicom = logging.getLogger("pynetdicom")
    pynetdicom_level = pynetdicom.level
    with preserved_hooks():
        try:
            yield
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
            pynetdicom.setLevel(pynetdicom_level)
