"""The blending math on hand-made distributions."""

import numpy as np
import pytest

from blendin_local.engine.blending import auto_alpha, blend, mix, proxy_tune, should_intervene, softmax


def test_softmax_is_a_distribution_and_keeps_order():
    p = softmax(np.array([1.0, 3.0, 2.0, -50.0], dtype=np.float32))
    assert p.sum() == pytest.approx(1.0)
    assert list(np.argsort(-p)) == [1, 2, 0, 3]


def test_softmax_survives_huge_logits():
    p = softmax(np.array([1000.0, 999.0], dtype=np.float32))
    assert np.isfinite(p).all() and p[0] > p[1]


@pytest.mark.parametrize(
    "top, gamma, expected", [(0.39, 0.4, True), (0.4, 0.4, False), (0.99, 1.01, True), (0.0, 0.0, False)]
)
def test_trigger_is_strictly_below_gamma(top, gamma, expected):
    assert should_intervene(top, gamma) is expected


def test_auto_alpha_formula():
    p_base = np.array([0.3, 0.25, 0.45])
    p_guide = np.array([0.8, 0.1, 0.1])
    # pG_max / (pB_max + pG_max) + 0.1 * p_B(argmax p_G) = 0.8 / 1.25 + 0.1 * 0.3
    assert auto_alpha(p_base, p_guide) == pytest.approx(0.8 / 1.25 + 0.03)


def test_auto_alpha_trusts_the_more_confident_model():
    diffuse_base = np.full(10, 0.1)
    assert auto_alpha(diffuse_base, np.eye(10)[3]) > 0.85
    assert auto_alpha(np.eye(10)[3] * 0.39 + 0.061 * (1 - np.eye(10)[3]), np.full(10, 0.1)) < 0.5


def test_auto_alpha_is_clipped_to_one():
    # On two distributions the formula stays at or below 1 (0.1 * pB_max <= pB_max / (pB_max + pG_max)):
    # only scores that are not a distribution reach past it, and there the clip holds alpha at 1.
    assert auto_alpha(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == pytest.approx(0.5 + 0.1)
    assert auto_alpha(np.array([0.0, 15.0]), np.array([0.0, 1.0])) == 1.0  # unclipped: 1 / 16 + 0.1 * 15


def test_auto_alpha_without_guide_mass_is_only_the_agreement_bonus_on_token_zero():
    # pG_max = 0 leaves 0.1 * p_B(argmax p_G), and the argmax of all zeros is token 0.
    assert auto_alpha(np.array([0.3, 0.7]), np.zeros(2)) == pytest.approx(0.03)
    assert auto_alpha(np.array([0.0, 1.0]), np.zeros(2)) == 0.0


def test_auto_alpha_without_any_mass_is_zero():
    assert auto_alpha(np.zeros(2), np.zeros(2)) == 0.0


def test_alpha_zero_returns_the_base_distribution_itself():
    p_base = softmax(np.random.default_rng(0).normal(size=100).astype(np.float32))
    assert mix(p_base, np.full(100, 0.01), 0.0) is p_base


def test_alpha_one_is_the_guide_renormalised():
    p_guide = np.array([0.2, 0.5, 0.1, 0.0])  # 0.2 of its mass lost to unmapped tokens
    out = mix(np.array([0.7, 0.1, 0.1, 0.1]), p_guide, 1.0)
    assert out == pytest.approx(p_guide / 0.8)


def test_mixture_of_a_distribution_with_itself_is_itself():
    p = softmax(np.random.default_rng(1).normal(size=1000))
    for alpha in (0.1, 0.5, 0.9):
        assert np.argmax(mix(p, p, alpha)) == np.argmax(p)
        assert mix(p, p, alpha) == pytest.approx(p)


def test_blend_reports_the_alpha_it_used():
    p_base, p_guide = np.array([0.3, 0.3, 0.4]), np.array([0.9, 0.05, 0.05])
    assert blend(p_base, p_guide, 0.25).alpha == 0.25
    auto = blend(p_base, p_guide, None)
    assert auto.alpha == pytest.approx(auto_alpha(p_base, p_guide))
    assert np.argmax(auto.probs) == 0


def test_ensemble_is_the_average():
    a, b = np.array([0.6, 0.4, 0.0]), np.array([0.0, 0.2, 0.8])
    assert mix(a, b, 0.5) == pytest.approx([0.3, 0.3, 0.4])


def test_proxy_with_identical_guide_and_anti_is_the_base():
    p_base = np.array([0.5, 0.3, 0.2])
    p_guide = np.array([0.1, 0.6, 0.3])
    assert proxy_tune(p_base, p_guide, p_guide) == pytest.approx(p_base)


def test_proxy_applies_the_guide_shift():
    p_base = np.array([0.5, 0.5, 0.0])
    tuned = proxy_tune(p_base, np.array([0.2, 0.8, 0.0]), np.array([0.5, 0.5, 0.0]))
    # ratios 0.4 and 1.6: 0.2 : 0.8
    assert tuned == pytest.approx([0.2, 0.8, 0.0])


def test_proxy_leaves_tokens_the_guide_cannot_express():
    p_base = np.array([0.25, 0.25, 0.5])
    tuned = proxy_tune(p_base, np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0]))
    assert tuned == pytest.approx(p_base)


# -- the sparse guide path: every result must equal the dense formula's, bit for bit ---------

from blendin_local.engine.blending import LazyMixture, lazy_mix, top_of  # noqa: E402
from blendin_local.engine.blending import argmax as mixture_argmax  # noqa: E402
from blendin_local.engine.distributions import SparseDistribution  # noqa: E402


def random_sparse(rng, size, n_index):
    index = np.sort(rng.choice(size, n_index, replace=False))
    values = rng.dirichlet(np.full(n_index, 0.3))
    return SparseDistribution(index, values, size)


@pytest.mark.parametrize("seed", range(20))
def test_sparse_mixture_is_the_dense_mixture_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    size = 5000
    p_base = rng.dirichlet(np.full(size, 0.05)).astype(np.float32)
    guide = random_sparse(rng, size, 900)
    alpha = float(rng.uniform(0.05, 0.95))
    dense = mix(p_base, guide.dense(), alpha)
    assert np.array_equal(mix(p_base, guide, alpha), dense)
    m = lazy_mix(p_base, guide, alpha)
    assert isinstance(m, LazyMixture)
    assert mixture_argmax(m) == int(np.argmax(dense))
    assert np.array_equal(m.dense(), dense)
    assert mixture_argmax(lazy_mix(p_base, guide, alpha, float(p_base.max()))) == int(np.argmax(dense))
    assert auto_alpha(p_base, guide) == auto_alpha(p_base, guide.dense())
    assert top_of(guide) == (float(guide.dense().max()), int(guide.dense().argmax()))


def test_mixture_argmax_settles_exact_ties_on_the_first_index():
    p_base = np.zeros(10, dtype=np.float32)
    p_base[[2, 7]] = 0.5
    guide = SparseDistribution(np.array([2, 7]), np.array([0.5, 0.5]), 10)
    assert mixture_argmax(lazy_mix(p_base, guide, 0.5)) == 2 == int(np.argmax(mix(p_base, guide.dense(), 0.5)))


def test_mixture_argmax_finds_a_base_token_the_guide_does_not_know():
    p_base = np.full(100, 0.001, dtype=np.float32)
    p_base[42] = 0.9
    guide = SparseDistribution(np.array([3, 4]), np.array([0.6, 0.4]), 100)
    for base_max in (None, 0.9):  # the base's top reaches the maximum: the pass over p_base is not skipped
        m = lazy_mix(p_base, guide, 0.3, base_max)
        assert mixture_argmax(m) == 42 == int(np.argmax(mix(p_base, guide.dense(), 0.3)))


@pytest.mark.parametrize("seed", range(20))
def test_knowing_the_base_maximum_changes_no_greedy_choice(seed):
    # Peaked guides and flat bases (the pass is skipped) and the other way round (it is not).
    rng = np.random.default_rng(seed)
    size = 3000
    p_base = rng.dirichlet(np.full(size, rng.choice([0.02, 1.0]))).astype(np.float32)
    guide = SparseDistribution(
        np.sort(rng.choice(size, 40, replace=False)), rng.dirichlet(np.full(40, rng.choice([0.05, 5.0]))), size
    )
    for alpha in (0.1, 0.5, 0.9):
        expected = int(np.argmax(mix(p_base, guide.dense(), alpha)))
        assert mixture_argmax(lazy_mix(p_base, guide, alpha, float(p_base.max()))) == expected


def test_mixture_argmax_agrees_on_near_ties():
    # Entries a few ulps apart must be decided exactly as the dense, normalised vector decides.
    rng = np.random.default_rng(0)
    for _ in range(200):
        p_base = rng.dirichlet(np.ones(50)).astype(np.float32)
        index = np.array([1, 5, 9])
        values = np.array([0.3, 0.3, 0.4]) * (1 + rng.integers(-3, 4, 3) * 2.0**-52)
        guide = SparseDistribution(index, values, 50)
        p_base[[1, 5, 9]] = p_base[1]
        alpha = 0.5
        assert mixture_argmax(lazy_mix(p_base, guide, alpha)) == int(np.argmax(mix(p_base, guide.dense(), alpha)))


def test_fixed_integer_or_zero_alpha_falls_back_to_the_dense_formula():
    p_base = np.array([0.2, 0.8], dtype=np.float32)
    guide = SparseDistribution(np.array([0]), np.array([1.0]), 2)
    assert lazy_mix(p_base, guide, 0.0) is p_base
    assert np.array_equal(lazy_mix(p_base, guide, 1), mix(p_base, guide.dense(), 1))


def test_rank_with_a_known_maximum_is_the_counted_rank():
    from blendin_local.engine.methods import rank_in

    p = np.array([0.1, 0.4, 0.4, 0.05, 0.05], dtype=np.float32)
    top = float(p.max())
    for token in range(len(p)):
        assert rank_in(p, token, top) == rank_in(p, token) == int(np.count_nonzero(p > p[token]))
