"""``dicom-ingest`` (and ``python -m dicom_ingest``): the stop signals first, then the rest.

A serving command (``local``, ``receive``) owns SIGTERM and SIGINT from its first moment.
Importing the rest of the program takes a second or more; a signal in that time would
otherwise kill the process by its default action, or raise KeyboardInterrupt, instead of
stopping it cleanly. Other commands keep Python's own handling (Ctrl-C interrupts them).
"""

from __future__ import annotations

import sys

from dicom_ingest.signals import StopSignals

SERVING_COMMANDS = ("local", "receive")


def main() -> int:
    signals = StopSignals.install() if sys.argv[1:2] in ([c] for c in SERVING_COMMANDS) else None
    from dicom_ingest.cli import main as run  # noqa: PLC0415 - imported once signals are ours

    return run(signals=signals)


if __name__ == "__main__":
    sys.exit(main())
