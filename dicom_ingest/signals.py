"""SIGTERM and SIGINT for the long-running commands: a stop, then a quick stop.

Standard library only, so that ``dicom_ingest.__main__`` can install the handlers before the
rest of the program is imported (a second or more).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

# The exit status after a second signal cut the drain short.
EXIT_HURRIED = 1


class StopSignals:
    """SIGTERM and SIGINT, from the moment they are installed: the first asks for a stop (a
    drain within the grace period), a second for a quick one (what is in flight is aborted).

    Installed before anything slow happens (opening and reconciling the spool), so a signal
    that arrives before the pipeline is ready is acted on, not lost to the default action.
    """

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.hurry = threading.Event()

    @classmethod
    def install(cls) -> StopSignals:
        signals = cls()
        signal.signal(signal.SIGTERM, signals._on_signal)
        signal.signal(signal.SIGINT, signals._on_signal)
        return signals

    def stopped(self) -> None:
        """The stop is complete: a later signal can change nothing, and must not end the
        process by its default action while it exits (Python restores the default handlers
        of the ones it installed when it shuts down, but not an ignored signal)."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only setting events here: Python runs this between two bytecodes of the main
        # thread, which may be holding any lock at that moment.
        if self.requested.is_set():
            self.hurry.set()
        self.requested.set()
