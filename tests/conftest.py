import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def max_relative_difference(actual, expected):
    """max |a − e| / max |e|: one number per tensor, robust to entries near zero."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.abs(expected).max(initial=0.0)
    diff = np.abs(actual - expected).max(initial=0.0)
    return diff if scale == 0.0 else diff / scale
