"""Issue #21 item 2: a per-second limit is used to at least 90 % by a saturated sender, never breached by the
sender's clock, and not breached at the platform's either when requests arrive up to 80 ms late (the jitter of
a busy host or a network path). Simulated clock: the limiter's own waits advance it."""

from __future__ import annotations

import bisect
import random

import pytest

from connectors.ratelimit import limiter_from


def _most_in_any_window(times: list[float], window: float, closed: bool) -> int:
    times = sorted(times)
    edge = bisect.bisect_right if closed else bisect.bisect_left
    return max(edge(times, t + window) - i for i, t in enumerate(times))


def _saturated_sends(per_second: float, count: int) -> list[float]:
    now = [1000.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = limiter_from(per_second, None, None, 1, clock=lambda: now[0], sleep=sleep)
    sends = []
    for _ in range(count):
        with limiter.slot():
            sends.append(now[0])
        now[0] += 0.0005  # the request itself: the sender asks again at once
    return sends


@pytest.mark.parametrize("per_second", [8, 10, 5, 2])
def test_a_saturated_sender_uses_at_least_90_percent_of_a_per_second_limit_and_never_breaches_it(per_second):
    sends = _saturated_sends(per_second, 40 * per_second)
    pace = (len(sends) - 1) / (sends[-1] - sends[0])
    assert pace >= 0.9 * per_second, f"{pace:.2f}/s is {pace / per_second:.1%} of {per_second}/s"
    assert _most_in_any_window(sends, 1.0, closed=True) <= per_second


@pytest.mark.parametrize("per_second", [8, 10])
def test_requests_arriving_up_to_80_ms_late_stay_within_the_platforms_sliding_second(per_second):
    sends = _saturated_sends(per_second, 100 * per_second)
    jitter = random.Random(21)
    arrivals = [t + jitter.uniform(0.0, 0.080) for t in sends]
    # The worst case too: every (L+1)-th request late by 80 ms, the L after it on time.
    worst = [t + (0.080 if i % (per_second + 1) == 0 else 0.0) for i, t in enumerate(sends)]
    assert _most_in_any_window(arrivals, 1.0, closed=False) <= per_second
    assert _most_in_any_window(worst, 1.0, closed=False) <= per_second
