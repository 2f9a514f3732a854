"""The suite asserts no timings (issue 10): Hypothesis deadlines are off for every test."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st


def test_hypothesis_has_no_deadline_by_default() -> None:
    assert settings.default is not None and settings.default.deadline is None


@settings(max_examples=2)
@given(st.integers())
def test_a_slow_example_is_no_failure(number: int) -> None:
    """Each example takes longer than Hypothesis's default deadline (200 ms)."""
    time.sleep(0.25)  # the slowness under test, not a wait: nothing is checked after it
    assert isinstance(number, int)
