"""Greedy and sampled choice, the repetition penalties, and the filters in their documented order."""

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.blending import LazyMixture
from blendin_local.engine.distributions import SparseDistribution
from blendin_local.engine.generation import Generation
from blendin_local.engine.prompts import Message
from blendin_local.engine.sampling import SamplerSettings, choose, filter_candidates, penalise
from blendin_local.engine.settings import GenerationSettings

P = np.array([0.05, 0.4, 0.3, 0.15, 0.1])
NO_HISTORY: list[int] = []


def test_greedy_is_argmax_whatever_the_rng():
    for seed in range(5):
        assert choose(P, SamplerSettings(), np.random.default_rng(seed), NO_HISTORY) == 1


def test_greedy_ties_take_the_lowest_id():
    assert choose(np.array([0.2, 0.4, 0.4]), SamplerSettings(), np.random.default_rng(0), NO_HISTORY) == 1


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
    draws = [choose(P, SamplerSettings(1.0), rng, NO_HISTORY) for _ in range(4000)]
    freq = np.bincount(draws, minlength=5) / 4000
    assert freq == pytest.approx(P, abs=0.03)


def test_low_temperature_sharpens_without_underflow():
    p = np.array([1e-30, 0.5, 0.5 - 1e-30])
    rng = np.random.default_rng(0)
    assert {choose(p, SamplerSettings(0.01), rng, NO_HISTORY) for _ in range(50)} <= {1, 2}


def test_same_seed_same_draws():
    a = [choose(P, SamplerSettings(0.8), np.random.default_rng(42), NO_HISTORY) for _ in range(1)]
    b = [choose(P, SamplerSettings(0.8), np.random.default_rng(42), NO_HISTORY) for _ in range(1)]
    assert a == b
    r1, r2 = np.random.default_rng(1), np.random.default_rng(1)
    assert [choose(P, SamplerSettings(0.8), r1, NO_HISTORY) for _ in range(30)] == [
        choose(P, SamplerSettings(0.8), r2, NO_HISTORY) for _ in range(30)
    ]


# -- the penalties, on hand-made distributions ---------------------------------------------------

VOCAB = 12
DISTRIBUTIONS = (
    st.lists(st.floats(0.0, 1.0), min_size=VOCAB, max_size=VOCAB)
    .filter(lambda values: sum(values) > 1e-6)
    .map(lambda values: np.array(values) / sum(values))
)
HISTORIES = st.lists(st.integers(0, VOCAB - 1), max_size=40)
WINDOWS = st.one_of(st.just(-1), st.just(0), st.integers(1, 50))
LOWERING = st.builds(  # penalties that only ever lower a token seen in the window
    lambda repeat, presence, frequency, last_n: SamplerSettings(
        repeat_penalty=repeat, presence_penalty=presence, frequency_penalty=frequency, repeat_last_n=last_n
    ),
    st.floats(1.0, 100.0),
    st.floats(0.0, 2.0),
    st.floats(0.0, 2.0),
    WINDOWS,
)
ANY_PENALTIES = st.builds(
    lambda repeat, presence, frequency, last_n: SamplerSettings(
        repeat_penalty=repeat, presence_penalty=presence, frequency_penalty=frequency, repeat_last_n=last_n
    ),
    st.floats(1e-3, 100.0),
    st.floats(-2.0, 2.0),
    st.floats(-2.0, 2.0),
    WINDOWS,
)
OFF = st.one_of(  # every way of leaving the penalties off, as keyword arguments
    WINDOWS.map(lambda last_n: {"repeat_last_n": last_n}),
    st.fixed_dictionaries(
        {
            "repeat_penalty": st.floats(1e-3, 100.0),
            "presence_penalty": st.floats(-2.0, 2.0),
            "frequency_penalty": st.floats(-2.0, 2.0),
            "repeat_last_n": st.just(0),
        }
    ),
)


def window_of(history: list[int], last_n: int) -> list[int]:
    return history if last_n == -1 else history[max(0, len(history) - last_n) :] if last_n > 0 else []


def by_hand(p: np.ndarray, history: list[int], s: SamplerSettings) -> np.ndarray:
    """The penalties as the docs state them, one token at a time."""
    logp = np.log(np.where(p > 0, p, 1.0)) + np.where(p > 0, 0.0, -np.inf)
    for token, count in Counter(window_of(history, s.repeat_last_n)).items():
        logp[token] = logp[token] * s.repeat_penalty - (count * s.frequency_penalty + s.presence_penalty)
    weights = np.exp(logp - logp.max())
    return weights / weights.sum()


@given(DISTRIBUTIONS, HISTORIES, OFF, st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.7]))
def test_penalties_off_are_the_identity(p, history, off, seed, temperature):
    sampler = SamplerSettings(temperature, **off)
    assert penalise(p, history, sampler) is p
    plain = SamplerSettings(temperature)
    assert choose(p, sampler, np.random.default_rng(seed), history) == choose(
        p, plain, np.random.default_rng(seed), NO_HISTORY
    )


@given(DISTRIBUTIONS, HISTORIES, ANY_PENALTIES)
def test_the_result_is_a_distribution(p, history, sampler):
    out = penalise(p, history, sampler)
    assert np.all(out >= 0) and np.isfinite(out).all()
    assert out.sum() == pytest.approx(1.0)
    assert np.all(out[p == 0] == 0)  # a token without probability gains none


@given(DISTRIBUTIONS, HISTORIES, LOWERING)
def test_a_penalised_token_never_gains_on_an_unpenalised_one(p, history, sampler):
    out = penalise(p, history, sampler)
    seen = set(window_of(history, sampler.repeat_last_n))
    with np.errstate(divide="ignore"):  # in logs: a ratio of two tiny numbers may overflow
        log_out, log_p = np.log(out), np.log(p)
    for a in seen:
        for b in set(range(VOCAB)) - seen:
            if p[b] > 0 and out[b] > 0:
                assert log_out[a] - log_out[b] <= log_p[a] - log_p[b] + 1e-9


@given(DISTRIBUTIONS, HISTORIES, ANY_PENALTIES)
def test_penalties_count_the_tokens_in_the_window(p, history, sampler):
    expected = by_hand(p, history, sampler)
    assert np.asarray(penalise(p, history, sampler)) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_the_window_is_the_last_repeat_last_n_tokens():
    p = np.full(4, 0.25)
    history = [0, 0, 0, 1, 2, 2]
    frequency = SamplerSettings(frequency_penalty=1.0, repeat_last_n=3)  # window [1, 2, 2]
    out = penalise(p, history, frequency)
    assert out[0] == out[3]  # token 0 is older than the window
    assert out[1] / out[3] == pytest.approx(np.exp(-1.0)) and out[2] / out[3] == pytest.approx(np.exp(-2.0))
    everything = penalise(p, history, SamplerSettings(frequency_penalty=1.0, repeat_last_n=-1))
    assert everything[0] / everything[3] == pytest.approx(np.exp(-3.0))
    none = SamplerSettings(frequency_penalty=1.0, repeat_last_n=0)
    assert penalise(p, history, none) is p


def test_presence_counts_once_and_repeat_scales_the_log_probability():
    p = np.array([0.5, 0.25, 0.25])
    out = penalise(p, [0, 0, 1], SamplerSettings(presence_penalty=0.5, repeat_penalty=2.0))
    logp = np.log(p) * [2.0, 2.0, 1.0] - [0.5, 0.5, 0.0]
    assert out == pytest.approx(np.exp(logp) / np.exp(logp).sum())


def test_negative_penalties_on_a_long_window_do_not_overflow():
    p = np.array([1e-3, 1 - 1e-3])
    out = penalise(p, [0] * 5000, SamplerSettings(frequency_penalty=-2.0, repeat_last_n=-1))
    assert out[0] == pytest.approx(1.0) and np.isfinite(out).all()


def test_candidates_penalised_beyond_floats_range_keep_their_order():
    p = np.array([0.0, 0.6, 0.4])
    out = penalise(p, [1, 2] * 400, SamplerSettings(frequency_penalty=2.0, repeat_last_n=-1))
    assert out == pytest.approx([0.0, 0.6, 0.4])  # both lose 800: only their own ratio is left


def test_a_lazy_mixture_is_penalised_as_its_dense_vector_and_kept_lazy_when_off():
    base = np.array([0.5, 0.3, 0.2, 0.0], dtype=np.float32)
    guide = SparseDistribution(np.array([1, 3]), np.array([0.6, 0.4]), 4)
    lazy = LazyMixture(base, guide, 0.5)
    on = SamplerSettings(repeat_penalty=3.0)
    assert np.array_equal(penalise(lazy, [1, 1], on), penalise(lazy.dense(), [1, 1], on))
    assert penalise(lazy, [1, 1], SamplerSettings()) is lazy


def test_entries_that_stand_for_tokens_are_penalised_by_their_token():
    """A choice between routes: entry i is the route ending in token entry_tokens[i]."""
    masses = np.array([0.5, 0.3, 0.2])
    ends_in = np.array([7, 3, 7])
    out = penalise(masses, [7], SamplerSettings(presence_penalty=1.0), ends_in)
    assert out[0] / out[1] == pytest.approx(0.5 / 0.3 * np.exp(-1.0))
    assert out[2] / out[1] == pytest.approx(0.2 / 0.3 * np.exp(-1.0))


def test_greedy_is_the_argmax_after_the_penalties():
    p = np.array([0.6, 0.4])
    assert choose(p, SamplerSettings(repeat_penalty=3.0), np.random.default_rng(0), [0]) == 1
    assert choose(p, SamplerSettings(repeat_penalty=3.0), np.random.default_rng(0), [1]) == 0


# -- unset filters: llama.cpp's defaults when sampling -------------------------------------------


def test_unset_filters_take_llama_cpps_defaults_when_sampling():
    sampler = GenerationSettings(temperature=0.8).sampler()
    assert (sampler.top_k, sampler.top_p, sampler.min_p) == (40, 0.95, 0.05)


@settings(max_examples=50)
@given(
    st.floats(0.01, 100.0),
    st.one_of(st.none(), st.integers(0, 100)),
    st.one_of(st.none(), st.floats(0.01, 1.0)),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_filters_set_explicitly_are_honoured_when_sampling(temperature, top_k, top_p, min_p):
    sampler = GenerationSettings(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p).sampler()
    assert sampler.top_k == (40 if top_k is None else top_k)
    assert sampler.top_p == (0.95 if top_p is None else top_p)
    assert sampler.min_p == (0.05 if min_p is None else min_p)


def test_filters_set_to_off_stay_off():
    sampler = GenerationSettings(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0).sampler()
    assert (sampler.top_k, sampler.top_p, sampler.min_p) == (0, 1.0, 0.0)


def test_greedy_reads_no_filter():
    sampler = GenerationSettings().sampler()
    assert sampler.greedy and (sampler.top_k, sampler.top_p, sampler.min_p) == (0, 1.0, 0.0)


def test_the_penalties_reach_the_sampler():
    sampler = GenerationSettings(
        repeat_penalty=1.1, repeat_last_n=-1, presence_penalty=0.5, frequency_penalty=-0.5
    ).sampler()
    assert (sampler.repeat_penalty, sampler.repeat_last_n, sampler.presence_penalty, sampler.frequency_penalty) == (
        1.1,
        -1,
        0.5,
        -0.5,
    )
    assert GenerationSettings().sampler().penalises is False


# -- a scripted loop, broken by the repeat penalty -----------------------------------------------

LOOP_PIECES = [EOS, b"x", b"a", b"b", b"c"]


def a_then_b(seen):
    """a and b in turn, each at 0.62; c, the way out of the loop, at 0.38 throughout."""
    after = b"b" if seen[-1] == b"a" else b"a"
    return {after: 1.0, b"c": 0.5}


def loop_text(prompt: str = "x", **values) -> str:
    values = {"max_tokens": 12, "base_prompt": "raw", "guide_prompt": "raw", **values}
    pair = ScriptedPair(ScriptedModel("base", LOOP_PIECES, a_then_b), ScriptedModel("guide", LOOP_PIECES, a_then_b))
    return Generation(pair, [Message("user", prompt)], GenerationSettings(**values)).run().text


# At gamma 1.01 blendin blends every token (a LazyMixture, densified only for the penalties) and
# Nudging's guide drafts every word.
LOOPING_METHODS = [
    {"method": "base"},
    {"method": "blendin", "gamma": 1.01},
    {"method": "guide"},
    {"method": "nudging", "gamma": 1.01},
]


@pytest.mark.parametrize("method", LOOPING_METHODS, ids=lambda m: m["method"])
def test_a_repeat_penalty_breaks_a_two_token_loop(method):
    assert loop_text(**method) == "ab" * 6
    # log 0.62 * 3 = -1.43 is below log 0.38 = -0.97: a token in the window gives way to c, until
    # c is in the window too (then c, the least likely, is penalised the most)
    assert loop_text(repeat_penalty=3.0, **method).startswith("abc")
    # in a window as long as the loop, every step has a way out
    assert loop_text(repeat_penalty=3.0, repeat_last_n=2, **method) == "abc" * 4


@pytest.mark.parametrize("method", LOOPING_METHODS, ids=lambda m: m["method"])
def test_the_prompts_tokens_are_in_the_window(method):
    # The prompt "ab" ends in b, so a comes next, unless the penalty sees the prompt's a.
    assert loop_text("ab", repeat_penalty=3.0, **method).startswith("c")
    assert loop_text("ab", repeat_penalty=3.0, repeat_last_n=1, **method).startswith("a")
    assert loop_text("ab", repeat_penalty=3.0, repeat_last_n=0, **method).startswith("a")
