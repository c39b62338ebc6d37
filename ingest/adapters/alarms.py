"""One thread that runs short callbacks at given times, for timers that come and go often.

A ``threading.Timer`` is a thread per timer: a request deadline or a lease heartbeat per
upload batch made a thread start and a join for every request, work that competed with the
receiver's association threads for the interpreter. An ``AlarmClock`` keeps its alarms in a
heap and runs them on one thread. Callbacks must be short and must not block (a socket
``shutdown``, a queue update); an exception in one is logged and the clock goes on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Alarm:
    """A scheduled callback; ``cancel`` makes sure it does not run (again)."""

    __slots__ = ("_callback", "_cancelled", "_clock", "_interval")

    def __init__(
        self, clock: AlarmClock, callback: Callable[[], None], interval: float | None
    ) -> None:
        self._clock = clock
        self._callback = callback
        self._interval = interval
        self._cancelled = False

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._clock._cancelled()


class AlarmClock:
    """Runs each alarm's callback on one daemon thread, started with the first alarm."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._changed = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._dropped = 0  # cancelled alarms still in the heap

    def after(self, seconds: float, callback: Callable[[], None]) -> Alarm:
        """Run ``callback`` once, ``seconds`` from now."""
        return self._add(Alarm(self, callback, None), seconds)

    def every(self, seconds: float, callback: Callable[[], None]) -> Alarm:
        """Run ``callback`` every ``seconds``, the first time ``seconds`` from now."""
        if seconds <= 0:
            raise ValueError("an alarm's interval must be positive")
        return self._add(Alarm(self, callback, seconds), seconds)

    def pending(self) -> int:
        """Alarms not yet run or dropped (cancelled ones leave when they come due)."""
        with self._changed:
            return len(self._heap)

    def _cancelled(self) -> None:
        """Count a cancelled alarm; when they are most of the heap, drop them all (a long
        deadline cancelled by every request that ends in time would otherwise pile up)."""
        with self._changed:
            self._dropped += 1
            if self._dropped > 64 and self._dropped * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2]._cancelled]
                heapq.heapify(self._heap)
                self._dropped = 0

    def _add(self, alarm: Alarm, seconds: float) -> Alarm:
        with self._changed:
            heapq.heappush(self._heap, (time.monotonic() + seconds, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._changed.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._heap and self._heap[0][2]._cancelled:
                        heapq.heappop(self._heap)  # dropped without waiting for its time
                        self._dropped = max(0, self._dropped - 1)
                        continue
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    if wait is not None and wait <= 0:
                        due, _, alarm = heapq.heappop(self._heap)
                        break
                    self._changed.wait(wait)
                if alarm._interval is not None:
                    again = max(due + alarm._interval, time.monotonic())
                    heapq.heappush(self._heap, (again, next(self._order), alarm))
            if alarm._cancelled:
                continue
            try:
                alarm._callback()
            except Exception:
                log.exception("alarm callback failed", extra={"alarm_clock": self._name})
