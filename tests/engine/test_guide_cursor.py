"""Boundary handling between two vocabularies, on scripted models.

The base lacks the guide's piece "'s"; the guide, fed "Here" + "'" as two tokens, would go
astray ("Here'S"). Healing must keep the guide on its own path.
"""

import numpy as np
import pytest
from paper import PAPERS_BLENDIN
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.generation import Generation, GenerationSettings
from blendin_local.engine.guide_cursor import GuideCursor
from blendin_local.engine.prompts import Message

GUIDE_PIECES = [EOS, b"Q", b"Here", b"'s", b"'", b"S", b" the", b" thing", b" there", b".", b"s"]
BASE_PIECES = [EOS, b"Q", b"Here", b"'", b"s", b"S", b" the", b" thing", b" there", b".", b" th", b"e"]


def guide_rule(seen):
    text = b"".join(seen)
    if seen[-1] == b"'":  # the non-canonical split: a guide fed "'" alone goes wrong
        return {b"S": 5.0}
    table = {
        b"Q": {b"Here": 5.0},
        b"QHere": {b"'s": 4.0, b"'": 1.0, b" the": 2.0},
        b"QHere's": {b" the": 4.0, b" there": 3.5},
        b"QHere's the": {b" thing": 4.0, b".": 1.0},
        b"QHere's the thing": {b".": 5.0},
    }
    return table.get(text, {EOS: 5.0})


def base_rule(seen):
    text = b"".join(seen)
    table = {
        b"Q": {b"Here": 1.0, b" the": 0.9},
        b"QHere": {b" the": 1.0, b"'": 0.8},
        b"QHere'": {b"s": 3.0},
        b"QHere's": {b" the": 1.0, b" there": 0.9},
    }
    return table.get(text, {b".": 1.0, EOS: 0.9})


def run(pair, **settings):
    gen = Generation(
        pair,
        [Message("user", "Q")],
        GenerationSettings(base_prompt="raw", guide_prompt="raw", stop_at_new_turn=False, **settings),
    )
    return list(gen)[-1].result


@pytest.fixture
def pair():
    return ScriptedPair(ScriptedModel("base", BASE_PIECES, base_rule), ScriptedModel("guide", GUIDE_PIECES, guide_rule))


def test_guide_alone(pair):
    assert run(pair, method="guide").text == "Here's the thing."


def test_alpha_one_always_on_reproduces_the_guide_through_a_missing_piece(pair):
    result = run(pair, method="blendin", alpha=1.0, gamma=1.01, **PAPERS_BLENDIN)
    assert result.text == "Here's the thing."
    assert [e.piece for e in result.trace][:3] == ["Here", "'", "s"]  # the base wrote "'s" in two steps


def test_alpha_zero_is_the_base(pair):
    assert run(pair, method="blendin", alpha=0.0, gamma=1.01, **PAPERS_BLENDIN).text == run(pair, method="base").text


def test_healing_weighs_the_split_by_how_likely_the_guide_writes_it(pair):
    cursor = GuideCursor(pair.guide, pair.bridge, pair.guide.tokenize(b"QHere"))
    cursor.commit(b"'", cursor.propose())
    proposal = cursor.propose()
    assert proposal.anchor == pair.guide.tokenize(b"QHere") and proposal.h == b"'"
    s, capital_s = pair.base.pieces.index(b"s"), pair.base.pieces.index(b"S")
    # "s" finishes the guide's "'s" (e^4); "S" only follows the unlikely split "'" + "S" (e^1)
    assert proposal.on_base[s] > 0.9 > 0.1 > proposal.on_base[capital_s] > 0


def test_base_text_the_guide_cannot_settle_is_tokenized_and_healed(pair):
    cursor = GuideCursor(pair.guide, pair.bridge, pair.guide.tokenize(b"Q"))
    for piece in (b"Here", b"'"):  # the base wrote these without consulting the guide
        cursor.commit(piece)
    proposal = cursor.propose()
    # "Here" settles (a guide token too); "'" is a guide token with extensions, but the base's
    # boundary after an exact guide piece is kept, as the base itself keeps it
    assert proposal.anchor == pair.guide.tokenize(b"QHere'")
    cursor = GuideCursor(pair.guide, pair.bridge, pair.guide.tokenize(b"Q"))
    for piece in (b" th", b"e"):  # " th" is no guide token: the tail is tokenized, then healed
        cursor.commit(piece)
    proposal = cursor.propose()
    assert proposal.h == b" the" and proposal.anchor == pair.guide.tokenize(b"Q")
    top = int(np.argmax(proposal.on_base))
    assert pair.base.pieces[top] in (b"", b" th", b"e", b".")  # " thing" and " there" go on as base tokens


def test_settling_prefers_the_guides_own_token(pair):
    cursor = GuideCursor(pair.guide, pair.bridge, pair.guide.tokenize(b"QHere"))
    proposal = cursor.propose()
    cursor.commit(b"'", proposal)  # the base wrote "'" for the guide's "'s"
    assert cursor.state.healing and cursor.state.tail == [b"'"]
    proposal = cursor.propose()
    cursor.commit(b"s", proposal)
    assert [pair.guide.pieces[t] for t in cursor.state.tokens] == [b"Q", b"Here", b"'s"]
    assert not cursor.state.tail
