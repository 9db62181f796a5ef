"""The decoding methods' logic on scripted models, where each model's preferences are known: no
real model is loaded (tests/engine/test_methods.py checks the same methods on the real pair)."""

from paper import PAPERS_BLENDIN
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.generation import Generation
from blendin_local.engine.prompts import Message
from blendin_local.engine.settings import GenerationSettings

PIECES = [EOS, b"4", b"\n", b"Question:", b" again", b"a", b"b", b" "]
MESSAGES = [Message("user", "What is 2+2?")]


def rambling_base(seen):
    """Answers "4", then invents the next question, again and again."""
    if b"4" not in seen:
        return {b"4": 10.0}
    following = {b"4": b"\n", b"\n": b"Question:", b"Question:": b" again", b" again": b"\n"}
    return {following[seen[-1]]: 10.0}


def unsure_after_a(seen):
    """Sure of "a" except right after one, where "a" and "b" are even."""
    return {b"a": 1.0, b"b": 1.0} if seen[-1] == b"a" else {b"a": 10.0}


def prefers_b(seen):
    return {b"b": 10.0}


def run(base_rule, guide_rule, **settings):
    pair = ScriptedPair(ScriptedModel("base", PIECES, base_rule), ScriptedModel("guide", PIECES, guide_rule))
    values = {"max_tokens": 12, "base_prompt": "plain", "guide_prompt": "plain", **PAPERS_BLENDIN, **settings}
    return Generation(pair, MESSAGES, GenerationSettings(**values)).run()


def test_new_turn_stop_cuts_the_base_where_it_invents_the_next_question():
    on = run(rambling_base, rambling_base, method="base")
    off = run(rambling_base, rambling_base, method="base", stop_at_new_turn=False)
    assert off.text.startswith("4\nQuestion: again\nQuestion:") and off.stop_reason == "length"
    assert on.text == "4" and on.stop_reason == "stop"


def test_blendin_asks_the_guide_exactly_where_the_base_is_unsure():
    result = run(unsure_after_a, prefers_b, method="blendin", gamma=0.6)
    assert result.n_interventions > 0
    for entry in result.trace:
        assert (entry.source == "blend") == (entry.base_top_p < 0.6)
        assert (entry.alpha is None) == (entry.source == "base")


def test_gamma_zero_is_the_base_alone():
    result = run(unsure_after_a, prefers_b, method="blendin", gamma=0.0)
    assert result.n_interventions == 0
    assert result.text == run(unsure_after_a, prefers_b, method="base").text


def test_ensemble_blends_every_token_half_and_half():
    result = run(unsure_after_a, prefers_b, method="ensemble")
    assert result.n_interventions == result.n_tokens > 0
    assert {entry.alpha for entry in result.trace} == {0.5}
