import pytest

from harness.results.stats import wilson_interval


@pytest.mark.parametrize(("successes", "trials", "low", "high"), [
    (0, 10, 0.0, 0.2775),    # no success: the upper bound stays informative
    (10, 10, 0.7225, 1.0),   # all successes
    (5, 10, 0.2366, 0.7634),  # symmetric around one half
    (45, 50, 0.7864, 0.9565),
])
def test_wilson_interval_matches_reference_values(successes, trials, low, high):
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_of_no_trials_is_uninformative_and_bad_counts_raise():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes=11"):
        wilson_interval(11, 10)
