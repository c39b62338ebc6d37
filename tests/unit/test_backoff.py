"""Exponential backoff with jitter."""

from __future__ import annotations

import random

import pytest

from ingest.workers import Backoff


def ceiling(backoff: Backoff, attempt: int) -> float:
    return min(backoff.maximum, backoff.minimum * 2.0 ** (attempt - 1))


@pytest.mark.parametrize(
    "backoff",
    [Backoff(), Backoff(0.5, 30.0), Backoff(2.0, 2.0), Backoff(0.01, 1000.0)],
    ids=["default", "half-to-30", "flat", "wide"],
)
@pytest.mark.parametrize("attempt", range(1, 13))
def test_delay_is_within_half_ceiling_and_ceiling(backoff: Backoff, attempt: int) -> None:
    rng = random.Random(attempt)
    top = ceiling(backoff, attempt)
    delays = [backoff.delay(attempt, rng) for _ in range(200)]
    assert all(top / 2 <= d <= top for d in delays)
    # Jitter: the delays are spread over the window, not pinned to one end.
    assert max(delays) - min(delays) > top / 4


def test_ceilings_double_then_cap() -> None:
    backoff = Backoff(1.0, 600.0)
    assert [ceiling(backoff, n) for n in range(1, 13)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        512,
        600,
        600,
    ]
    rng = random.Random(0)
    assert max(backoff.delay(12, rng) for _ in range(100)) <= 600.0
    assert min(backoff.delay(12, rng) for _ in range(100)) >= 300.0


def test_delay_is_reproducible_with_a_seeded_rng() -> None:
    backoff = Backoff(1.0, 600.0)
    first = [backoff.delay(n, random.Random(42)) for n in range(1, 13)]
    second = [backoff.delay(n, random.Random(42)) for n in range(1, 13)]
    assert first == second


def test_attempt_zero_is_treated_as_the_first() -> None:
    backoff = Backoff(4.0, 600.0)
    rng = random.Random(3)
    assert all(2.0 <= backoff.delay(0, rng) <= 4.0 for _ in range(50))


def test_delay_without_rng_uses_module_random() -> None:
    backoff = Backoff(1.0, 8.0)
    assert all(4.0 <= backoff.delay(4) <= 8.0 for _ in range(50))
