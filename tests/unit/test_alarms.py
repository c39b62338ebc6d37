"""The alarm clock: one thread runs every timer's callback, in time order."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from ingest.adapters import alarms
from ingest.adapters.alarms import AlarmClock

WAIT = 10.0  # generous: only a failure waits this long


def test_alarms_run_in_time_order_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = AlarmClock("test-order")
    ran: list[tuple[str, str]] = []
    done = threading.Event()
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(WAIT)

    def record(name: str) -> None:
        ran.append((name, threading.current_thread().name))
        if len(ran) == 3:
            done.set()

    clock.after(0.0, hold)  # keeps the clock's thread busy while the others are added
    assert holding.wait(WAIT)
    # Added out of order at one frozen moment, so a slow machine cannot reorder them.
    frozen = time.monotonic()
    monkeypatch.setattr(alarms, "time", SimpleNamespace(monotonic=lambda: frozen))
    clock.after(0.06, lambda: record("third"))
    clock.after(0.0, lambda: record("first"))
    clock.after(0.03, lambda: record("second"))
    monkeypatch.setattr(alarms, "time", time)
    release.set()
    assert done.wait(WAIT)
    assert [name for name, _ in ran] == ["first", "second", "third"]
    assert {thread for _, thread in ran} == {"test-order"}


def test_a_cancelled_alarm_never_runs_and_leaves_the_heap() -> None:
    clock = AlarmClock("test-cancel")
    ran = threading.Event()
    later = threading.Event()
    alarm = clock.after(0.05, ran.set)
    alarm.cancel()
    clock.after(0.1, later.set)
    assert later.wait(WAIT)
    assert not ran.is_set()
    assert clock.pending() == 0


def test_a_repeating_alarm_runs_until_cancelled() -> None:
    clock = AlarmClock("test-every")
    count = 0
    third = threading.Event()
    lock = threading.Lock()

    def beat() -> None:
        nonlocal count
        with lock:
            count += 1
            if count == 3:
                third.set()

    alarm = clock.every(0.01, beat)
    assert third.wait(WAIT)
    alarm.cancel()
    with lock:
        seen = count
    after = threading.Event()
    clock.after(0.05, after.set)
    assert after.wait(WAIT)
    with lock:
        assert count <= seen + 1  # at most the beat already running when cancel came


def test_a_failing_callback_is_logged_and_the_clock_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = AlarmClock("test-failure")
    went_on = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    clock.after(0.0, fail)
    clock.after(0.02, went_on.set)
    assert went_on.wait(WAIT)
    assert any(r.getMessage() == "alarm callback failed" for r in caplog.records)


def test_cancelled_long_alarms_do_not_pile_up() -> None:
    clock = AlarmClock("test-compact")
    for _ in range(1000):
        clock.after(600.0, lambda: None).cancel()
    assert clock.pending() < 200


def test_an_earlier_alarm_wakes_a_clock_waiting_for_a_later_one() -> None:
    clock = AlarmClock("test-wake")
    clock.after(600.0, lambda: None)
    time.sleep(0.01)  # let the clock's thread start waiting on the 600 s alarm
    soon = threading.Event()
    clock.after(0.0, soon.set)
    assert soon.wait(WAIT)
