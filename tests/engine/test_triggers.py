"""BlendIn's loop and ending triggers (engine/triggers.py): the pure checks against brute force,
then on scripted models: a scripted loop gets broken (or ended), a scripted end is taken, and with
both triggers off the output is byte-identical to the paper's BlendIn."""

import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paper import PAPERS_BLENDIN
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.distributions import SparseDistribution
from blendin_local.engine.generation import Generation
from blendin_local.engine.methods import BlendIn
from blendin_local.engine.prompts import Message
from blendin_local.engine.settings import GenerationSettings
from blendin_local.engine.triggers import (
    LOOP_STOP_TOKENS,
    EndingTrigger,
    LoopTrigger,
    at_boundary,
    end_probability,
    repeats_ngram,
)

TOKENS = st.lists(st.integers(0, 3), max_size=40)


def brute_repeats(answer, candidate, ngram, window):
    recent = list(answer[-window:])
    wanted = [*answer[len(answer) - ngram + 1 :], candidate]
    if len(answer) < ngram:
        return False
    return any(recent[i : i + ngram] == wanted for i in range(len(recent) - ngram + 1))


@given(TOKENS, st.integers(0, 3), st.integers(1, 6), st.integers(1, 50))
def test_repeats_ngram_is_a_search_of_the_window(answer, candidate, ngram, window):
    assert repeats_ngram(answer, candidate, ngram, window) == brute_repeats(answer, candidate, ngram, window)


def test_repeats_ngram_examples():
    assert repeats_ngram([1, 2, 3, 1, 2], 3, 3, 100)
    assert not repeats_ngram([1, 2, 3, 1, 2], 4, 3, 100)
    assert not repeats_ngram([1, 2, 3, 9, 9, 9, 1, 2], 3, 3, 5)  # the first 1 2 3 is out of the window


@pytest.mark.parametrize(
    ("text", "boundary"),
    [(b"Done.", True), (b"a line\n", True), (b"Really?  ", True), (b"Wow!", True), (b"and so", False), (b"", False)],
)
def test_boundaries_are_line_and_sentence_ends(text, boundary):
    assert at_boundary(text) == boundary


def test_end_probability_reads_the_end_token_of_a_sparse_distribution():
    d = SparseDistribution(np.array([0, 3, 7]), np.array([0.2, 0.5, 0.3]), 10)
    assert end_probability(d, 3) == 0.5 and end_probability(d, 4) == 0.0 and end_probability(d, 0) == 0.2


# -- on scripted models ---------------------------------------------------------------------

PIECES = [EOS, b"tea", b" is", b" hot", b".", b"\n", b" Sip", b" it", b" Done"]
MESSAGES = [Message("user", "Tea?")]


CYCLE = {b"tea": b" is", b" is": b" hot", b" hot": b".", b".": b"\n", b"\n": b"tea"}


def looping_base(seen):
    """Writes "tea is hot.\\n" over and over, sure of every token; never an end token."""
    return {CYCLE.get(seen[-1], b"tea"): 10.0}


def guide_that_ends(seen):
    """After one sentence the answer may be finished: an end token or more, even; before that it
    follows the base."""
    if seen.count(b".") >= 1 and seen[-1] in (b".", b"\n"):
        return {EOS: 10.0, b" Done": 10.0}
    return {CYCLE.get(seen[-1], b"tea"): 10.0}


def guide_that_moves_on(seen):
    """Wants " Sip it." instead of a second "tea", else follows the base; never ends."""
    if seen[-1] == b"\n":
        return {b" Sip": 10.0}
    if seen[-1] == b" Sip":
        return {b" it": 10.0}
    if seen[-1] == b" it":
        return {b".": 10.0}
    return {CYCLE.get(seen[-1], b"tea"): 10.0}


def guide_that_copies(seen):
    return looping_base(seen)


def scripted_generation(guide_rule, **settings) -> Generation:
    """BlendIn on the looping base; each test switches on the triggers it is about."""
    pair = ScriptedPair(ScriptedModel("base", PIECES, looping_base), ScriptedModel("guide", PIECES, guide_rule))
    values = {"max_tokens": 60, "base_prompt": "plain", "guide_prompt": "plain", "method": "blendin"}
    return Generation(pair, MESSAGES, GenerationSettings(**{**values, **PAPERS_BLENDIN, **settings}))


def run(guide_rule, **settings):
    return scripted_generation(guide_rule, **settings).run()


def test_both_triggers_off_is_the_papers_blendin_byte_for_byte():
    for guide in (guide_that_ends, guide_that_moves_on, guide_that_copies):
        off = run(guide)
        # The paper's method object, with no trigger at all: the step it takes is the paper's.
        generation = scripted_generation(guide)
        generation.method = BlendIn(gamma=generation.settings.gamma, alpha=generation.settings.alpha)
        paper = generation.run()
        assert off.text == paper.text and off.trace == paper.trace
        assert off.stop_reason == "length" and off.n_interventions == 0  # the base is sure: the guide is never asked


def test_the_loop_trigger_lets_the_guide_break_a_loop():
    result = run(guide_that_moves_on, loop_trigger=True, loop_ngram=3)
    assert result.text.startswith("tea is hot.\n")
    assert "Sip it" in result.text  # where the base would have repeated itself, the guide's words won
    assert any(entry.source == "blend" for entry in result.trace)


def test_a_loop_the_guide_does_not_break_ends_with_stop_reason_loop():
    result = run(guide_that_copies, loop_trigger=True, loop_ngram=3)
    assert result.stop_reason == "loop"
    # It repeats for LOOP_STOP_TOKENS tokens after the first n-gram that repeated, then ends.
    assert result.n_tokens < len(CYCLE) + 3 + LOOP_STOP_TOKENS
    assert run(guide_that_copies).stop_reason == "length"


def test_the_ending_trigger_ends_where_the_guide_would_end():
    result = run(guide_that_ends, end_trigger=True)
    assert result.stop_reason == "eos" and result.text == "tea is hot."
    assert run(guide_that_ends, end_trigger=True, end_threshold=0.6).stop_reason == "length"  # p(end) is 0.5


def test_the_ending_trigger_asks_the_guide_only_at_boundaries():
    pair = ScriptedPair(
        ScriptedModel("base", PIECES, looping_base), ScriptedModel("guide", PIECES, guide_that_moves_on)
    )
    settings = GenerationSettings(
        max_tokens=10, base_prompt="plain", guide_prompt="plain", method="blendin", loop_trigger=False, end_trigger=True
    )
    generation = Generation(pair, MESSAGES, settings)
    result = generation.run()
    assert result.stop_reason == "length"
    # "tea is hot.\ntea is hot." has three boundaries after its tokens: ".", "\n", "."; the guide
    # was asked at each of them and nowhere else.
    assert len(pair.guide.evaluated) == 3


def test_the_settings_give_blendin_its_triggers_and_ensemble_none():
    def method(**settings):
        return scripted_generation(looping_base, **settings).method

    paper = method()
    assert isinstance(paper, BlendIn) and paper.loop is None and paper.ending is None
    both = method(loop_trigger=True, loop_ngram=3, loop_window=32, end_trigger=True, end_threshold=0.2)
    assert both.loop == LoopTrigger(3, 32) and both.ending == EndingTrigger(0.2)
    ensemble = method(method="ensemble", loop_trigger=True, end_trigger=True)
    assert ensemble.loop is None and ensemble.ending is None  # the paper's ensemble: every token, no trigger


def test_every_stop_reason_has_an_openai_finish_reason():
    from blendin_local.engine.generation import STOP_REASONS
    from blendin_local.interfaces.server.responses import FINISH_REASONS

    assert set(FINISH_REASONS) == set(STOP_REASONS)
    assert set(FINISH_REASONS.values()) <= {"stop", "length"}


# -- the ending trigger only decides where the answer ends ------------------------------------

WORDS = [EOS, b"tea", b" is", b" hot", b" cold", b".", b"\n", b" Sip", b" it", b"!", b" Done"]


def hashed_rule(seed: int, end_weight: float):
    """A model whose preferences are a fixed pseudo-random function of the text so far: sometimes
    sure, sometimes not, with an end token of varying weight."""

    def rule(fed):
        h = zlib.crc32(b"|".join(fed[-3:]) + seed.to_bytes(4, "little"))
        rng = np.random.default_rng(h)
        logits = rng.normal(0.0, 2.0, len(WORDS))
        logits[0] += end_weight
        return {piece: float(v) for piece, v in zip(WORDS, logits, strict=True)}

    return rule


def ending_run(seed: int, **settings):
    pair = ScriptedPair(
        ScriptedModel("base", WORDS, hashed_rule(seed, -4.0)), ScriptedModel("guide", WORDS, hashed_rule(seed + 1, 1.0))
    )
    values = {"max_tokens": 40, "base_prompt": "plain", "guide_prompt": "plain", "method": "blendin"}
    return Generation(pair, MESSAGES, GenerationSettings(**{**values, **PAPERS_BLENDIN, **settings})).run()


@given(st.integers(0, 10_000), st.sampled_from([0.05, 0.2, 0.5, 0.9]), st.booleans())
def test_an_ending_threshold_cuts_the_measured_run_where_its_first_check_reaches_it(seed, threshold, loop):
    loop_settings = {"loop_trigger": loop, "loop_ngram": 3}
    off = ending_run(seed, **loop_settings)
    measured = ending_run(seed, end_trigger=True, end_threshold=2.0, **loop_settings)
    # Measuring changes nothing: the same text, token for token.
    assert (measured.text, measured.trace, measured.stop_reason) == (off.text, off.trace, off.stop_reason)
    assert all(0.0 <= c.probability <= 1.0 for c in measured.end_checks)
    ended = ending_run(seed, end_trigger=True, end_threshold=threshold, **loop_settings)
    first = next((c for c in measured.end_checks if c.probability >= threshold), None)
    if first is None:
        assert (ended.text, ended.stop_reason) == (off.text, off.stop_reason)
    else:
        assert ended.stop_reason == "eos"
        assert ended.text == measured.text[: first.chars] and ended.n_tokens == first.tokens
        assert ended.trace == measured.trace[: first.tokens]
        assert ended.end_checks == [c for c in measured.end_checks if c.tokens <= first.tokens]
