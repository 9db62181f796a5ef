"""Greedy and sampled choice, and the filters in their documented order."""

import numpy as np
import pytest

from blendin_local.engine.sampling import SamplerSettings, choose, filter_candidates

P = np.array([0.05, 0.4, 0.3, 0.15, 0.1])


def test_greedy_is_argmax_whatever_the_rng():
    for seed in range(5):
        assert choose(P, SamplerSettings(), np.random.default_rng(seed)) == 1


def test_greedy_ties_take_the_lowest_id():
    assert choose(np.array([0.2, 0.4, 0.4]), SamplerSettings(), np.random.default_rng(0)) == 1


def test_top_k():
    assert list(filter_candidates(P, SamplerSettings(1.0, top_k=2))) == [1, 2]


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert list(filter_candidates(P, SamplerSettings(1.0, top_p=0.7))) == [1, 2]
    assert list(filter_candidates(P, SamplerSettings(1.0, top_p=0.71))) == [1, 2, 3]


def test_min_p_is_relative_to_the_top_token():
    assert list(filter_candidates(P, SamplerSettings(1.0, min_p=0.5))) == [1, 2]


def test_filters_compose_in_order():
    # top-k 4 drops 0.05; top-p 0.5 of what is left keeps 0.4 and 0.3; min-p 0.8 keeps 0.4 only
    assert list(filter_candidates(P, SamplerSettings(1.0, top_k=4, top_p=0.5, min_p=0.8))) == [1]


def test_top_p_on_a_large_vocabulary_matches_a_full_sort():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(50_000, 0.05))
    fast = filter_candidates(p, SamplerSettings(1.0, top_p=0.9))
    order = np.argsort(-p, kind="stable")
    cutoff = int(np.searchsorted(np.cumsum(p[order]), 0.9)) + 1
    assert set(fast) == set(order[:cutoff])


def test_sampling_follows_the_distribution():
    rng = np.random.default_rng(7)
    draws = [choose(P, SamplerSettings(1.0), rng) for _ in range(4000)]
    freq = np.bincount(draws, minlength=5) / 4000
    assert freq == pytest.approx(P, abs=0.03)


def test_low_temperature_sharpens_without_underflow():
    p = np.array([1e-30, 0.5, 0.5 - 1e-30])
    rng = np.random.default_rng(0)
    assert {choose(p, SamplerSettings(0.01), rng) for _ in range(50)} <= {1, 2}


def test_same_seed_same_draws():
    a = [choose(P, SamplerSettings(0.8), np.random.default_rng(42)) for _ in range(1)]
    b = [choose(P, SamplerSettings(0.8), np.random.default_rng(42)) for _ in range(1)]
    assert a == b
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    assert [choose(P, SamplerSettings(0.8), r1) for _ in range(30)] == [
        choose(P, SamplerSettings(0.8), r2) for _ in range(30)
    ]
