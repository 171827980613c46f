"""Tests for jmem.data.subsets: designs, determinism, prefix stability, errors."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jmem.errors import JmemError
from jmem.data.subsets import make_keep, model_rates_for

FAST = settings(max_examples=25, deadline=None)


# ----------------------------------------------------------------------------- designs


@pytest.mark.parametrize("rate,n,expected", [(0.7, 100, 70), (0.5, 7, 4), (0.45, 10, 5), (0.25, 3, 1)])
def test_fixed_exact_count_rounds_half_up(rate, n, expected):
    keep, rates = make_keep(0, 6, n, "fixed", rate)
    assert keep.dtype == np.bool_ and keep.shape == (6, n)
    assert (keep.sum(axis=1) == expected).all()
    assert rates.dtype == np.float32 and np.allclose(rates, rate)


def test_bernoulli_rate_is_right_on_average():
    keep, _ = make_keep(1, 64, 2000, "bernoulli", 0.3)
    assert keep.mean() == pytest.approx(0.3, abs=0.01)
    assert keep.sum(axis=1).std() > 0  # sizes vary: not the fixed design


def test_balanced_every_example_in_exactly_rate_r_models():
    keep, _ = make_keep(2, 20, 500, "balanced", 0.7)
    assert (keep.sum(axis=0) == 14).all()


@pytest.mark.parametrize("design", ["fixed", "bernoulli", "balanced"])
def test_deterministic_and_seed_dependent(design):
    a, _ = make_keep(3, 10, 300, design, 0.5)
    b, _ = make_keep(3, 10, 300, design, 0.5)
    c, _ = make_keep(4, 10, 300, design, 0.5)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_masks_are_pinned():
    """The masks of a given seed must not change between versions (runs would not reproduce)."""
    digests = {}
    for design in ("fixed", "bernoulli", "balanced"):
        keep, _ = make_keep(0, 10, 50, design, 0.6)
        digests[design] = hashlib.sha256(np.packbits(keep, axis=1).tobytes()).hexdigest()[:16]
    assert digests == PINNED_DIGESTS


PINNED_DIGESTS = {"fixed": "57c1ffffa0569030", "bernoulli": "7258494d3035faf1", "balanced": "bcc9fcf129fae788"}


@pytest.mark.parametrize("design", ["fixed", "bernoulli"])
def test_rows_are_prefix_stable(design):
    small, _ = make_keep(5, 3, 400, design, [0.5, 0.9])
    large, _ = make_keep(5, 11, 400, design, [0.5, 0.9])
    np.testing.assert_array_equal(small, large[:3])


def test_balanced_is_prefix_stable_in_examples():
    small, _ = make_keep(5, 10, 40, "balanced", 0.5)
    large, _ = make_keep(5, 10, 90, "balanced", 0.5)
    np.testing.assert_array_equal(small, large[:, :40])


def test_rows_do_not_depend_on_chunking(monkeypatch):
    import jmem.data.subsets as subsets

    whole, _ = make_keep(6, 9, 100, "fixed", 0.5)
    col, _ = make_keep(6, 12, 100, "balanced", [0.5, 0.25, 0.75])
    monkeypatch.setattr(subsets, "_CHUNK_ENTRIES", 250)  # forces chunks of 2 rows / columns
    np.testing.assert_array_equal(make_keep(6, 9, 100, "fixed", 0.5)[0], whole)
    np.testing.assert_array_equal(make_keep(6, 12, 100, "balanced", [0.5, 0.25, 0.75])[0], col)


def test_several_rates_cycle_over_models():
    keep, rates = make_keep(7, 6, 100, "fixed", [0.2, 0.5, 0.9])
    np.testing.assert_allclose(rates, np.float32([0.2, 0.5, 0.9, 0.2, 0.5, 0.9]))
    np.testing.assert_array_equal(keep.sum(axis=1), [20, 50, 90, 20, 50, 90])
    np.testing.assert_allclose(model_rates_for(4, 0.3), np.full(4, 0.3, np.float32))


def test_balanced_several_rates_balances_within_each_group():
    keep, _ = make_keep(8, 8, 200, "balanced", [0.5, 0.75])  # groups of 4 models each
    np.testing.assert_array_equal(keep[0::2].sum(axis=0), 2)
    np.testing.assert_array_equal(keep[1::2].sum(axis=0), 3)


@given(
    num_models=st.sampled_from([2, 3, 4, 5, 8, 10, 20, 25, 40]),
    rate=st.sampled_from([0.1, 0.2, 0.25, 0.5, 0.7, 0.75, 0.9, 0.95]),
    num_examples=st.integers(1, 60),
    seed=st.integers(0, 2**31 - 1),
)
@FAST
def test_balanced_counts_property(num_models, rate, num_examples, seed):
    k = rate * num_models
    if abs(k - round(k)) > 1e-9 or not 0 < round(k) < num_models:
        with pytest.raises(JmemError, match="nearest valid num_models"):
            make_keep(seed, num_models, num_examples, "balanced", rate)
        return
    keep, _ = make_keep(seed, num_models, num_examples, "balanced", rate)
    np.testing.assert_array_equal(keep.sum(axis=0), round(k))


def test_large_fixed_design_keeps_exactly_rate_n_per_model():
    """At a study's size every fixed mask holds exactly rate * N examples (its speed is
    measured by benchmarks/bench_subsets.py)."""
    keep, _ = make_keep(0, 500, 20_000, "fixed", 0.7)
    assert keep.shape == (500, 20_000) and (keep.sum(axis=1) == 14_000).all()


def test_subsets_module_imports_no_training_stack():
    code = "import sys, jmem.data.subsets; bad = [m for m in ('flax', 'optax', 'jmem.engine.trainer') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(rates=1.2), r"subsets.rate=1.2 must be strictly between 0 and 1"),
        (dict(rates=0.0), r"subsets.rate=0.0 must be"),
        (dict(rates=float("nan")), r"subsets.rate=nan"),
        (dict(rates=[0.5, 1.0]), r"subsets.rates\[1\]=1.0"),
        (dict(rates=[]), r"subsets.rates=\[\] is empty"),
        (dict(num_models=0), r"train.num_models=0 must be >= 1"),
        (dict(num_models=2.5), r"train.num_models=2.5 must be an integer"),
        (dict(num_examples=0), r"num_examples=0 must be >= 1"),
        (dict(design="poisson"), r"subsets.design='poisson' is not one of 'fixed', 'bernoulli', 'balanced'"),
        (dict(rates=0.01, num_examples=20), r"keeps round\(0.01\*20\)=0 of num_examples=20"),
        (dict(rates=0.99, num_examples=20), r"keeps round\(0.99\*20\)=20"),
    ],
)
def test_make_keep_errors(kwargs, message):
    args = dict(seed=0, num_models=4, num_examples=50, design="fixed", rates=0.5) | kwargs
    with pytest.raises(JmemError, match=message) as info:
        make_keep(**args)
    assert "\n" not in str(info.value)


def test_balanced_error_names_nearest_valid_num_models():
    with pytest.raises(JmemError) as info:
        make_keep(0, 25, 10, "balanced", 0.7)
    assert str(info.value) == (
        "subsets.design='balanced' needs rate*num_models to be an integer: 0.7*25=17.5; "
        "nearest valid num_models: 20 or 30"
    )


def test_balanced_error_with_several_rates_names_the_group():
    # 7 models: group 0 = models 0, 2, 4, 6 (0.5*4 = 2 fine), group 1 = models 1, 3, 5.
    with pytest.raises(JmemError, match=r"group 1 has 0.75\*3=2.25; nearest valid num_models: 8$"):
        make_keep(0, 7, 10, "balanced", [0.5, 0.75])


def test_equal_heldout_gives_every_rate_the_same_held_out_count():
    """Blocks sized by 1 / (1 - rate): at 0.7 and 0.95 the 0.95 block is six times larger and
    every example is out of 48 models at each rate (balanced design)."""
    keep, rates = make_keep(0, 1120, 200, "balanced", (0.7, 0.95), equal_heldout=True)
    assert (rates[:160] == np.float32(0.7)).all() and (rates[160:] == np.float32(0.95)).all()
    for rate in (0.7, 0.95):
        out = (~keep[rates == np.float32(rate)]).sum(axis=0)
        assert (out == 48).all(), rate
    fixed, fixed_rates = make_keep(0, 70, 200, "fixed", (0.7, 0.95), equal_heldout=True)
    assert np.bincount((fixed_rates > 0.8).astype(int)).tolist() == [10, 60]
    with pytest.raises(JmemError, match="nearest valid num_models: 980 or 1050"):
        make_keep(0, 1000, 200, "balanced", (0.7, 0.95), equal_heldout=True)
    # off: the same number per rate, alternating (unchanged)
    _, alt = make_keep(0, 4, 200, "fixed", (0.7, 0.95))
    assert alt.tolist() == pytest.approx([0.7, 0.95, 0.7, 0.95])
