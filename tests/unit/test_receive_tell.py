"""A receive process tells its listener of commits once per burst, not once per instance."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from support.net import wait_until

from receiver import processes


class _Recorder:
    """The listener's end of the channel, as far as ``_Tell`` sees it."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def send(self, message: tuple[Any, ...], fd: int | None = None) -> None:
        with self._lock:
            self.sent.append(message)

    def published(self) -> list[dict[int, int]]:
        with self._lock:
            return [m[2] for m in self.sent if m[0] == "published"]


def telling(monkeypatch: pytest.MonkeyPatch, every: float) -> tuple[_Recorder, processes._Tell]:
    """A ``_Tell`` that tells commits at most every ``every`` seconds, and what it sent."""
    monkeypatch.setattr(processes, "_PUBLISHED_EVERY", every)
    channel = _Recorder()
    return channel, processes._Tell(channel)  # type: ignore[arg-type]


def test_a_lone_commit_is_told_at_once_and_a_burst_once_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel, tell = telling(monkeypatch, 3600.0)  # no timer fires in the test
    tell.published(7)
    assert channel.published() == [{7: 1}]  # at once: nothing was told just before
    for _ in range(5):
        tell.published(7)
    tell.published(8)
    tell.figure("instance", (0, 100, 0.01))
    assert channel.published() == [{7: 1}]  # held back while the burst goes on
    tell.tell_published()  # as before a connection's "done"
    assert channel.published() == [{7: 1}, {7: 5, 8: 1}]
    assert channel.sent[-1][1] == [("instance", (0, 100, 0.01))]  # figures ride along
    tell.tell_published()
    assert len(channel.sent) == 2  # nothing left to tell: no message


def test_commits_held_back_are_told_when_the_interval_is_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel, tell = telling(monkeypatch, 2.0)  # far longer than three calls take
    tell.published(1)
    tell.published(1)
    tell.published(2)
    wait_until(lambda: len(channel.published()) == 2, 10, "the held-back commits told")
    assert channel.published() == [{1: 1}, {1: 1, 2: 1}]
