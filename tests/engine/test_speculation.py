"""Speculative decoding (engine/speculation.py) on scripted models, which give the same logits in
a batch as alone: every speculative text must equal the sequential one, token for token, and the
rounds must say what happened (drafted, accepted, how each ended)."""

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paper import PAPERS_BLENDIN
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.generation import Generation
from blendin_local.engine.prompts import Message, prompt_tokens
from blendin_local.engine.settings import GenerationSettings
from blendin_local.engine.speculation import ROUND_ENDS
from blendin_local.errors import BlendinError

MESSAGES = [Message("user", "Tea?")]
PIECES = [EOS, b"tea", b"te", b"a", b" is", b" hot", b" cold", b".", b"\n", b" Sip", b" it", b"!"]
SENTENCE = [b"tea", b" is", b" hot", b".", b"\n"]
# The plain prompt of "Tea?" in these vocabularies: its pieces the models see before the answer.
PROMPT_PIECES = 2


def answer_of(seen):
    return list(seen[PROMPT_PIECES:])


def writes(script):
    """Writes `script`, sure of every token, then an end token; off the script, an end token."""

    def rule(seen):
        answer = answer_of(seen)
        n = len(answer)
        if n < len(script) and answer == list(script[:n]):
            return {script[n]: 10.0}
        return {EOS: 10.0}

    return rule


def run(base_rule, guide_rule, guide_pieces=PIECES, **values):
    pair = ScriptedPair(ScriptedModel("base", PIECES, base_rule), ScriptedModel("guide", guide_pieces, guide_rule))
    # The paper's BlendIn: the speculation under test, without a trigger's extra consultations
    base = {"max_tokens": 30, "base_prompt": "plain", "guide_prompt": "plain", "method": "blendin", **PAPERS_BLENDIN}
    return Generation(pair, MESSAGES, GenerationSettings(**{**base, **values})).run(), pair


def test_the_scripts_see_the_prompt_they_expect():
    model = ScriptedModel("base", PIECES, writes([]))
    assert len(prompt_tokens(model, MESSAGES, "plain")) == PROMPT_PIECES


def same_as_sequential(base_rule, guide_rule, k, guide_pieces=PIECES, **values):
    sequential, _ = run(base_rule, guide_rule, guide_pieces, **values)
    speculative, pair = run(base_rule, guide_rule, guide_pieces, speculative=k, **values)
    assert speculative.text == sequential.text
    assert speculative.trace == sequential.trace
    assert speculative.stop_reason == sequential.stop_reason
    assert sequential.speculation == []
    return speculative, pair


def test_a_whole_draft_is_accepted_and_the_base_evaluates_it_in_one_batch():
    script = SENTENCE * 2
    result, pair = same_as_sequential(writes(script), writes(script), 4)
    assert result.text == "tea is hot.\ntea is hot.\n"
    first = result.speculation[0]
    assert (first.at, first.drafted, first.accepted, first.ended) == (0, 4, 4, "whole")
    # Each whole round of 4 drafted tokens gives 5: the base evaluated 10 tokens in 2 rounds of
    # one batch each, plus the round where the guide drafted nothing (it would end).
    assert [r.ended for r in result.speculation] == ["whole", "whole", "empty"]
    assert sum(r.accepted for r in result.speculation) == 8
    batches = [seq for seq in pair.base.evaluated if len(seq) > 2]
    assert len(batches) == 3


def test_a_draft_rejected_at_its_first_token():
    base = SENTENCE
    guide = [b" Sip", b" it", b"."]
    result, _ = same_as_sequential(writes(base), writes(guide), 3)
    assert result.text == "tea is hot.\n" and result.n_interventions == 0  # the base was always sure
    first = result.speculation[0]
    assert (first.drafted, first.accepted, first.ended) == (3, 0, "rejected")


def test_a_draft_rejected_in_the_middle():
    guide = [b"tea", b" is", b" cold", b"."]
    result, _ = same_as_sequential(writes(SENTENCE), writes(guide), 4)
    first = result.speculation[0]
    assert (first.drafted, first.accepted, first.ended) == (4, 2, "rejected")
    assert result.text == "tea is hot.\n"


def test_a_draft_that_ends_inside_a_base_token():
    # The guide writes "tea" as "te" + "a"; drafting one token, its draft "te" ends inside the
    # base's "tea", which the base writes instead.
    guide_pieces = [p for p in PIECES if p != b"tea"]

    def guide(seen):
        answer = answer_of(seen)
        if answer in ([], [b"te"]):
            return {(b"a" if answer else b"te"): 10.0}
        return writes(SENTENCE)(seen)

    result, _ = same_as_sequential(writes(SENTENCE), guide, 1, guide_pieces=guide_pieces)
    first = result.speculation[0]
    assert (first.drafted, first.accepted, first.ended) == (1, 0, "rejected")


def test_an_end_token_inside_a_draft_is_not_drafted_and_the_answer_ends_on_the_last_row():
    short = [b"tea", b" is", b" hot", b"."]
    result, _ = same_as_sequential(writes(short), writes(short), 8)
    assert result.text == "tea is hot." and result.stop_reason == "eos"
    first = result.speculation[0]
    # The guide drafted its 4 tokens and its end token; only the 4 were drafted as base tokens,
    # and the base's end came from the fifth row of the same batch.
    assert (first.drafted, first.accepted, first.ended) == (4, 4, "whole")
    assert len(result.speculation) == 1


def test_a_stop_string_inside_a_draft_ends_the_answer_there():
    result, _ = same_as_sequential(writes(SENTENCE * 2), writes(SENTENCE * 2), 8, stop=["hot"])
    assert result.text == "tea is " and result.stop_reason == "stop"
    first = result.speculation[0]
    assert (first.drafted, first.ended) == (8, "stopped") and first.accepted == 3


def test_max_tokens_caps_the_draft():
    result, pair = same_as_sequential(writes(SENTENCE * 3), writes(SENTENCE * 3), 8, max_tokens=3)
    assert result.n_tokens == 3 and result.stop_reason == "length"
    assert result.speculation[0].drafted == 2  # the third token comes from the row after the second
    assert all(len(seq) <= len(pair.base.evaluated[0]) + 2 for seq in pair.base.evaluated)


def test_speculation_refuses_methods_that_do_not_choose_base_tokens():
    for method in ("guide", "nudging"):
        with pytest.raises(BlendinError, match="speculative"):
            GenerationSettings.checked(method=method, speculative=4)
    assert GenerationSettings.checked(method="base", speculative=4).speculative == 4


def test_the_base_alone_with_a_drafting_guide_writes_the_base_alones_text():
    guide = [b"tea", b" is", b" cold", b".", b"\n"]
    result, _ = same_as_sequential(writes(SENTENCE), writes(guide), 4, method="base")
    assert result.text == "tea is hot.\n" and result.speculation


WORDS = PIECES


def hashed_rule(seed: int, sharpness: float, end_weight: float):
    """Preferences that are a fixed pseudo-random function of the last pieces: sometimes sure,
    sometimes not, so that BlendIn both trusts the base and blends."""

    def rule(fed):
        h = zlib.crc32(b"|".join(fed[-2:]) + seed.to_bytes(4, "little"))
        logits = np.random.default_rng(h).normal(0.0, sharpness, len(WORDS))
        logits[0] += end_weight
        return {piece: float(v) for piece, v in zip(WORDS, logits, strict=True)}

    return rule


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 100_000),
    k=st.integers(1, 9),
    method=st.sampled_from(["blendin", "ensemble", "base"]),
    gamma=st.sampled_from([0.2, 0.4, 0.7]),
    temperature=st.sampled_from([0.0, 0.8]),
    loop=st.booleans(),
    agree=st.booleans(),
)
def test_speculation_never_changes_the_text(seed, k, method, gamma, temperature, loop, agree):
    """Any pair, method, K, trigger or temperature: the same tokens as sequential decoding, and
    the rounds add up (sampling draws the same numbers: the draft takes none)."""
    # A guide that ranks tokens as the base does (`agree`: most drafts accepted) or its own way.
    base, guide = hashed_rule(seed, 3.0, -3.0), hashed_rule(seed + (0 if agree else 1), 2.0, 0.0)
    values = {"method": method, "gamma": gamma, "temperature": temperature, "seed": 7, "max_tokens": 25}
    values |= {"loop_trigger": loop, "loop_ngram": 2, "end_trigger": loop, "end_threshold": 0.3}
    result, _ = same_as_sequential(base, guide, k, **values)
    rounds = result.speculation
    assert all(r.ended in ROUND_ENDS and 0 <= r.accepted <= r.drafted <= k for r in rounds)
    assert [r.at for r in rounds] == sorted(r.at for r in rounds)
    # Every token is read from some round's rows: a round gives its accepted tokens plus one.
    assert result.n_tokens <= sum(r.accepted + 1 for r in rounds)
