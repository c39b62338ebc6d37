"""Progress bars for the long commands (``replay``, ``reconcile``), on a terminal only.

tqdm draws the bar: one small, dependency-free package that redraws one line in place,
sizes itself to the terminal and shows the rate and the time left. When the stream is not
a terminal (a log file, a pipe, a CI job) the bar is off and prints nothing; the command's
summary line is what remains.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TextIO

from tqdm import tqdm


class ProgressBar:
    """Advance once per item; figures (done, failed …) are shown after the bar."""

    def __init__(
        self, what: str, unit: str, total: int | None = None, stream: TextIO | None = None
    ) -> None:
        stream = stream or sys.stderr
        self.enabled = stream.isatty()
        self._bar = tqdm(
            desc=what,
            unit=f" {unit}",
            total=total,
            file=stream,
            disable=not self.enabled,
            dynamic_ncols=True,
            leave=True,
        )

    def advance(self, figures: Mapping[str, int] | None = None) -> None:
        if not self.enabled:
            return
        if figures:
            self._bar.set_postfix(figures, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
