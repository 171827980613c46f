"""Tests of jmem.data.canaries.make_canaries."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jmem.data.canaries import make_canaries
from jmem.errors import JmemError


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 300), c=st.integers(2, 12),
       fraction=st.floats(0, 0.99))
def test_properties(seed, n, c, fraction):
    labels = np.random.default_rng(seed).integers(0, c, n)
    new, mask = make_canaries(seed, labels, c, fraction)
    assert new.dtype == np.int32 and mask.dtype == np.bool_
    assert new.shape == mask.shape == (n,)
    assert mask.sum() == round(fraction * n)
    np.testing.assert_array_equal(new != labels, mask)      # always a *different* class
    assert new.min(initial=0) >= 0 and new.max(initial=0) < c
    new2, mask2 = make_canaries(seed, labels, c, fraction)  # deterministic
    np.testing.assert_array_equal(new, new2)
    np.testing.assert_array_equal(mask, mask2)


def test_seed_matters_labels_do_not():
    labels = np.zeros(1000, int)
    _, a = make_canaries(0, labels, 10, 0.1)
    _, b = make_canaries(1, labels, 10, 0.1)
    _, c = make_canaries(0, np.arange(1000) % 10, 10, 0.1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # which examples: from the seed alone


def test_nested_in_fraction():
    labels = np.arange(500) % 7
    small_labels, small = make_canaries(5, labels, 7, 0.05)
    big_labels, big = make_canaries(5, labels, 7, 0.2)
    assert np.all(big[small])
    np.testing.assert_array_equal(small_labels[small], big_labels[small])


def test_new_class_uniform_over_others():
    labels = np.zeros(20_000, int)
    new, mask = make_canaries(0, labels, 5, 0.5)
    counts = np.bincount(new[mask], minlength=5)
    assert counts[0] == 0
    assert np.all(np.abs(counts[1:] / mask.sum() - 0.25) < 0.02)


def test_fraction_zero_and_validation():
    labels = np.array([0, 1, 2, 1])
    new, mask = make_canaries(0, labels, 3, 0.0)
    assert not mask.any()
    np.testing.assert_array_equal(new, labels)
    for bad in (1.0, -0.1, 1.5, float("nan"), "0.1"):
        with pytest.raises(JmemError, match="fraction"):
            make_canaries(0, labels, 3, bad)
    with pytest.raises(JmemError, match="num_classes"):
        make_canaries(0, labels, 1, 0.1)
    with pytest.raises(JmemError, match="labels"):
        make_canaries(0, labels, 2, 0.1)  # label 2 out of range
    with pytest.raises(JmemError, match="labels"):
        make_canaries(0, labels.astype(float), 3, 0.1)
