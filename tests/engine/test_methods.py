"""Each decoding method on the real default pair: what distinguishes it, checked (BlendIn: the
paper's; tests/engine/test_triggers.py checks the triggers)."""

import pytest
from conftest import OPTIONS
from paper import PAPERS_BLENDIN

from blendin_local.engine.generation import GenerationSettings
from blendin_local.errors import BlendinError
from blendin_local.pair import BlendPair

pytestmark = pytest.mark.models

PROMPT = "What is the boiling point of water at sea level?"


def run(pair, **settings):
    return pair.generate(PROMPT, GenerationSettings(max_tokens=48, **{**PAPERS_BLENDIN, **settings}))


def test_blendin_intervenes_only_where_the_base_is_unsure(default_pair):
    result = run(default_pair, method="blendin", gamma=0.4)
    for entry in result.trace:
        if entry.source == "base":
            assert entry.base_top_p >= 0.4 and entry.alpha is None
        else:
            assert entry.source == "blend" and entry.base_top_p < 0.4 and 0.0 <= entry.alpha <= 1.0
    assert 0 < result.n_interventions < result.n_tokens
    assert result.alpha_mean == pytest.approx(
        sum(e.alpha for e in result.trace if e.alpha is not None) / result.n_interventions
    )


def test_gamma_zero_never_asks_the_guide(default_pair):
    result = run(default_pair, method="blendin", gamma=0.0)
    assert result.n_interventions == 0
    assert result.text == run(default_pair, method="base").text


def test_fixed_alpha_is_reported(default_pair):
    result = run(default_pair, method="blendin", alpha=0.7)
    assert {e.alpha for e in result.trace if e.source == "blend"} == {0.7}


def test_ensemble_blends_every_token_half_and_half(default_pair):
    result = run(default_pair, method="ensemble")
    assert result.n_interventions == result.n_tokens
    assert {e.alpha for e in result.trace} == {0.5}


def test_guide_only_never_reads_the_base(default_pair):
    result = run(default_pair, method="guide")
    assert {e.source for e in result.trace} == {"guide"} and all(e.base_top_p is None for e in result.trace)


def test_nudging_inserts_guide_words_when_the_base_is_unsure(default_pair):
    result = run(default_pair, method="nudging", gamma=0.4)
    sources = [e.source for e in result.trace]
    assert "guide" in sources and "base" in sources and "blend" not in sources
    for e in result.trace:
        if e.source == "base":
            assert e.base_top_p >= 0.4


def test_nudging_with_gamma_zero_is_the_base(default_pair):
    assert run(default_pair, method="nudging", gamma=0.0).text == run(default_pair, method="base").text


def test_nudging_with_an_always_unsure_base_follows_the_guides_words(default_pair):
    result = run(default_pair, method="nudging", gamma=1.01, nudging_chunk=8)
    assert {e.source for e in result.trace} == {"guide"}
    guide = run(default_pair, method="guide")
    assert guide.text.startswith(result.text) or result.text.startswith(guide.text)


def test_proxy_with_the_guide_as_its_own_anti_model_is_the_base():
    pair = BlendPair.load(anti="smollm2-135m-instruct", options=OPTIONS)
    try:
        result = run(pair, method="proxy")
        assert result.text == run(pair, method="base").text
        assert result.n_interventions == result.n_tokens
    finally:
        pair.close()


def test_proxy_needs_an_anti_model_with_the_guides_vocabulary(default_pair):
    with pytest.raises(BlendinError, match="--anti"):
        run(default_pair, method="proxy")
    with pytest.raises(BlendinError, match="vocabulary"):
        BlendPair.load(anti="gemma3-270m", options=OPTIONS)


def test_end_of_generation_stops_either_way(default_pair):
    result = default_pair.generate("Say only the word yes.", GenerationSettings(method="guide", max_tokens=64))
    assert result.stop_reason == "eos"


def test_new_turn_stop_cuts_the_base_rambling(default_pair):
    on = default_pair.generate("What is 2+2?", GenerationSettings(method="base", max_tokens=96))
    off = default_pair.generate(
        "What is 2+2?", GenerationSettings(method="base", max_tokens=96, stop_at_new_turn=False)
    )
    # This base answers, then invents the next question: the stop ends the answer right there.
    assert "\nQuestion:" in off.text and off.stop_reason == "length"
    assert on.stop_reason == "stop" and on.text == off.text.split("\nQuestion:")[0]
