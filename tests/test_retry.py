"""RetryPolicy and Deadline: backoff shape, Retry-After, deadlines, validation."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.core.errors import RETRYABLE_KINDS, ProviderError
from orchestra.execution.retry import Deadline, RetryPolicy

NON_RETRYABLE = ("auth", "bad_request", "not_found", "context_window", "budget", "unavailable")

policies = st.builds(
    lambda base, factor, jitter, attempts: RetryPolicy(
        base_s=base, cap_s=base * factor, jitter=jitter, attempts_per_model=attempts
    ),
    base=st.floats(0.001, 10.0),
    factor=st.floats(1.0, 1000.0),
    jitter=st.floats(0.0, 1.0),
    attempts=st.integers(1, 10),
)
retries = st.integers(1, 2000)
seeds = st.integers(0, 2**32)


@given(policies, retries, seeds)
def test_backoff_is_between_zero_and_the_cap(policy: RetryPolicy, retry: int, seed: int) -> None:
    assert 0.0 <= policy.backoff_s(retry, random.Random(seed)) <= policy.cap_s


@given(st.floats(0.001, 10.0), st.floats(1.0, 1000.0), st.integers(1, 60))
def test_without_jitter_backoff_doubles_up_to_the_cap(base: float, factor: float, n: int) -> None:
    policy = RetryPolicy(base_s=base, cap_s=base * factor, jitter=0.0)
    rng = random.Random(0)
    waits = [policy.backoff_s(retry, rng) for retry in range(1, n + 1)]
    assert waits == [min(policy.cap_s, base * 2 ** (retry - 1)) for retry in range(1, n + 1)]
    assert all(a <= b for a, b in pairwise(waits))


@given(policies, retries, seeds)
def test_jitter_never_lengthens_the_wait(policy: RetryPolicy, retry: int, seed: int) -> None:
    plain = RetryPolicy(base_s=policy.base_s, cap_s=policy.cap_s, jitter=0.0)
    jittered = policy.backoff_s(retry, random.Random(seed))
    assert jittered <= plain.backoff_s(retry, random.Random(seed))
    assert jittered >= (1.0 - policy.jitter) * plain.backoff_s(retry, random.Random(seed)) - 1e-12


def test_same_seed_same_waits() -> None:
    policy = RetryPolicy()
    first = [policy.backoff_s(r, random.Random(7)) for r in range(1, 6)]
    assert first == [policy.backoff_s(r, random.Random(7)) for r in range(1, 6)]


def test_full_jitter_spreads_waits_over_the_whole_range() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=1.0, jitter=1.0)
    rng = random.Random(1)
    waits = [policy.backoff_s(1, rng) for _ in range(1000)]
    assert min(waits) < 0.05
    assert max(waits) > 0.95


@given(
    policies,
    st.integers(1, 12),
    st.floats(-5.0, 100.0),
    st.one_of(st.none(), st.floats(0.0, 100.0)),
    st.sampled_from(sorted(RETRYABLE_KINDS)),
    seeds,
)
def test_a_wait_never_exceeds_the_remaining_deadline(
    policy: RetryPolicy,
    retry: int,
    remaining: float,
    retry_after: float | None,
    kind: str,
    seed: int,
) -> None:
    error = ProviderError("x", kind=kind, retry_after_s=retry_after)  # type: ignore[arg-type]
    wait = policy.wait_before_retry(error, retry, remaining, random.Random(seed))
    if wait is not None:
        assert 0.0 <= wait < remaining
        assert wait <= policy.cap_s


@given(policies, st.floats(0.0, 100.0), st.floats(0.0, 200.0), seeds)
def test_retry_after_is_honoured_when_it_fits(
    policy: RetryPolicy, retry_after: float, remaining: float, seed: int
) -> None:
    policy = RetryPolicy(
        base_s=policy.base_s, cap_s=policy.cap_s, jitter=policy.jitter, attempts_per_model=3
    )
    error = ProviderError("slow down", kind="rate_limit", retry_after_s=retry_after)
    wait = policy.wait_before_retry(error, 1, remaining, random.Random(seed))
    fits = retry_after <= policy.cap_s and retry_after < remaining
    if wait is not None:
        assert wait >= retry_after
    if retry_after > policy.cap_s or retry_after >= remaining:
        assert wait is None
    if fits and policy.cap_s < remaining:
        assert wait is not None


def test_retry_after_beyond_the_cap_moves_on() -> None:
    error = ProviderError("slow down", kind="rate_limit", retry_after_s=30.0)
    assert RetryPolicy(cap_s=8.0).wait_before_retry(error, 1, 100.0, random.Random(0)) is None


def test_retry_after_within_the_cap_is_waited_out() -> None:
    error = ProviderError("slow down", kind="rate_limit", retry_after_s=3.0)
    wait = RetryPolicy(cap_s=8.0).wait_before_retry(error, 1, 100.0, random.Random(0))
    assert wait is not None and 3.0 <= wait <= 8.0


@given(policies, st.integers(1, 12), st.sampled_from(NON_RETRYABLE), seeds)
def test_non_retryable_kinds_are_never_retried(
    policy: RetryPolicy, retry: int, kind: str, seed: int
) -> None:
    error = ProviderError("no", kind=kind, retry_after_s=0.0)  # type: ignore[arg-type]
    assert policy.wait_before_retry(error, retry, 1e9, random.Random(seed)) is None


@given(st.integers(1, 10), st.sampled_from(sorted(RETRYABLE_KINDS)), seeds)
def test_attempts_per_model_is_respected(attempts: int, kind: str, seed: int) -> None:
    policy = RetryPolicy(attempts_per_model=attempts, base_s=0.01, cap_s=0.01)
    rng = random.Random(seed)
    error = ProviderError("flaky", kind=kind)  # type: ignore[arg-type]
    waits = [policy.wait_before_retry(error, retry, 1e9, rng) for retry in range(1, 20)]
    # attempts - 1 retries, then no more: the first attempt is not a retry.
    assert all(w is not None for w in waits[: attempts - 1])
    assert all(w is None for w in waits[attempts - 1 :])


def test_one_attempt_means_no_retry() -> None:
    error = ProviderError("down", kind="server")
    assert (
        RetryPolicy(attempts_per_model=1).wait_before_retry(error, 1, 60.0, random.Random()) is None
    )


def test_a_wait_that_would_pass_the_deadline_is_refused() -> None:
    policy = RetryPolicy(base_s=2.0, cap_s=2.0, jitter=0.0)
    error = ProviderError("down", kind="server")
    assert policy.wait_before_retry(error, 1, 2.0, random.Random(0)) is None
    assert policy.wait_before_retry(error, 1, 2.5, random.Random(0)) == 2.0


@pytest.mark.parametrize(
    "settings",
    [
        {"attempts_per_model": 0},
        {"attempts_per_model": True},
        {"attempts_per_model": 1.5},
        {"base_s": 0.0},
        {"base_s": -1.0},
        {"base_s": float("nan")},
        {"cap_s": float("inf")},
        {"base_s": 2.0, "cap_s": 1.0},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"jitter": float("nan")},
    ],
)
def test_nonsense_settings_are_rejected(settings: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**settings)  # type: ignore[arg-type]


def test_retry_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        RetryPolicy().backoff_s(0, random.Random())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_deadline_counts_down_on_its_clock() -> None:
    clock = FakeClock()
    deadline = Deadline(10.0, clock=clock)
    assert deadline.remaining() == 10.0 and not deadline.expired
    clock.now += 4.0
    assert deadline.remaining() == 6.0
    assert deadline.attempt_timeout(30.0) == 6.0
    assert deadline.attempt_timeout(2.0) == 2.0
    clock.now += 7.0
    assert deadline.remaining() == 0.0 and deadline.expired
    assert deadline.attempt_timeout(2.0) == 0.0


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan")])
def test_deadline_must_be_positive(seconds: float) -> None:
    with pytest.raises(ValueError):
        Deadline(seconds)


def test_attempt_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Deadline(1.0).attempt_timeout(0.0)
