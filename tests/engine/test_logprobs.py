"""Log-probabilities of the chosen tokens (engine/logprobs.py): the function on hand-made
distributions, and each method's reports on scripted models, whose distributions are known."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.blending import softmax
from blendin_local.engine.generation import Generation
from blendin_local.engine.guide_cursor import GuideCursor
from blendin_local.engine.logprobs import LOGPROB_FLOOR, token_logprob
from blendin_local.engine.methods import choose_route
from blendin_local.engine.prompts import Message
from blendin_local.engine.sampling import SamplerSettings
from blendin_local.engine.settings import GenerationSettings

PIECES = [b"a", b"b", b"c", b"\xe2\x82", b"d"]


def test_the_chosen_token_and_the_most_likely_ones_from_a_normalised_distribution():
    lp = token_logprob(np.array([0.2, 0.0, 0.6, 0.2, 0.0], dtype=np.float32), 3, 2, PIECES.__getitem__)
    assert (lp.token, lp.bytes) == ("\\xe2\\x82", (0xE2, 0x82))  # half a character: escaped, bytes exact
    assert lp.logprob == pytest.approx(math.log(0.2), rel=1e-6)
    assert [a.token for a in lp.top_logprobs] == ["c", "a"]  # 0.2 ties: the lower entry first
    assert [a.logprob for a in lp.top_logprobs] == pytest.approx([math.log(0.6), math.log(0.2)], rel=1e-6)


def test_weights_are_normalised_and_tokens_without_probability_are_never_alternatives():
    lp = token_logprob(np.array([3.0, 1.0, 0.0, 0.0, 0.0]), 1, 5, PIECES.__getitem__)
    assert lp.logprob == pytest.approx(math.log(0.25))
    assert [a.token for a in lp.top_logprobs] == ["a", "b"]
    assert token_logprob(np.array([3.0, 1.0, 0.0, 0.0, 0.0]), 0, 0, PIECES.__getitem__).top_logprobs == ()


def test_a_token_without_probability_gets_openais_floor_not_minus_infinity():
    lp = token_logprob(np.array([1.0, 0.0, 0.0, 0.0, 0.0]), 4, 1, PIECES.__getitem__)
    assert lp.logprob == LOGPROB_FLOOR and math.isfinite(lp.logprob)
    lp = token_logprob(np.zeros(5), 0, 3, PIECES.__getitem__)  # nothing to choose from at all
    assert lp.logprob == LOGPROB_FLOOR and lp.top_logprobs == ()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.just(0.0), st.floats(1e-30, 1e3)), min_size=1, max_size=40),
    st.integers(0, 40),
    st.data(),
)
def test_any_distribution(weights, k, data):
    p = np.array(weights)
    chosen = data.draw(st.integers(0, len(p) - 1))
    pieces = [bytes([i]) for i in range(len(p))]
    lp = token_logprob(p, chosen, k, pieces.__getitem__)
    total = p.sum()
    expected = math.log(p[chosen] / total) if p[chosen] > 0 else LOGPROB_FLOOR
    assert lp.logprob == pytest.approx(max(expected, LOGPROB_FLOOR), rel=1e-9, abs=1e-9)
    assert lp.bytes == (chosen,)
    positive = int(np.count_nonzero(p))
    assert len(lp.top_logprobs) == min(k, positive)
    probabilities = [math.exp(a.logprob) for a in lp.top_logprobs]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1 + 1e-9
    # the alternatives are the most likely entries: none left out is likelier than one kept
    kept = {a.bytes[0] for a in lp.top_logprobs}
    if kept:
        assert max((p[i] for i in range(len(p)) if i not in kept), default=0.0) <= min(p[i] for i in kept)
    if p[chosen] > 0 and len(kept) == min(k, positive) and k > 0 and p[chosen] > np.sort(p)[-min(k, positive)]:
        assert chosen in kept


# -- each method's reports, on scripted models --------------------------------------------------

GUIDE_PIECES = [EOS, b"Q", b"Here", b"'s", b"'", b"S", b" the", b" thing", b" there", b".", b"s"]
BASE_PIECES = [EOS, b"Q", b"Here", b"'", b"s", b"S", b" the", b" thing", b" there", b".", b" th", b"e"]


def guide_rule(seen):
    text = b"".join(seen)
    if seen[-1] == b"'":
        return {b"S": 5.0, b"s": 4.0}
    table = {
        b"Q": {b"Here": 5.0, b" the": 4.0},
        b"QHere": {b"'s": 4.0, b"'": 1.0, b" the": 2.0},
        b"QHere's": {b" the": 4.0, b" there": 3.5},
        b"QHere's the": {b" thing": 4.0, b".": 1.0},
        b"QHere's the thing": {b".": 5.0, EOS: 4.0},
    }
    return table.get(text, {EOS: 5.0, b".": 3.0})


def base_rule(seen):
    text = b"".join(seen)
    table = {
        b"Q": {b"Here": 1.0, b" the": 0.9},
        b"QHere": {b" the": 1.0, b"'": 0.8},
        b"QHere'": {b"s": 3.0, b"S": 1.0},
        b"QHere's": {b" the": 1.0, b" there": 0.9},
    }
    return table.get(text, {b".": 1.0, EOS: 0.9, b" th": 0.5})


def pair():
    return ScriptedPair(ScriptedModel("base", BASE_PIECES, base_rule), ScriptedModel("guide", GUIDE_PIECES, guide_rule))


def generate(**values):
    values = {"base_prompt": "raw", "guide_prompt": "raw", "stop_at_new_turn": False, "max_tokens": 12, **values}
    return Generation(pair(), [Message("user", "Q")], GenerationSettings(**values)).run()


METHOD_SETTINGS = [
    {"method": "base"},
    {"method": "guide"},
    {"method": "blendin", "gamma": 0.6},
    {"method": "blendin", "gamma": 1.01, "alpha": 1.0},
    {"method": "ensemble"},
    {"method": "nudging", "gamma": 0.6, "nudging_chunk": 3},
    {"method": "nudging", "gamma": 1.01, "nudging_chunk": 2},
    {"method": "blendin", "gamma": 0.6, "loop_trigger": True, "end_trigger": True, "end_threshold": 0.3},
]
SAMPLING = [{}, {"temperature": 0.9, "seed": 3}, {"temperature": 1.5, "seed": 11, "repeat_penalty": 1.3}]


@pytest.mark.parametrize("method", METHOD_SETTINGS)
@pytest.mark.parametrize("sampling", SAMPLING)
def test_asking_for_logprobs_changes_nothing_else(method, sampling):
    plain, asked = generate(**method, **sampling), generate(**method, **sampling, top_logprobs=3)
    assert asked.text == plain.text and asked.stop_reason == plain.stop_reason
    assert [(e.piece, e.source, e.alpha) for e in asked.trace] == [(e.piece, e.source, e.alpha) for e in plain.trace]
    assert all(e.logprob is None for e in plain.trace)


@pytest.mark.parametrize("method", METHOD_SETTINGS)
@pytest.mark.parametrize("sampling", SAMPLING)
def test_every_piece_has_its_own_log_probability(method, sampling):
    result = generate(**method, **sampling, top_logprobs=3)
    assert result.trace
    for entry in result.trace:
        lp = entry.logprob
        assert lp is not None
        assert lp.token == entry.piece and lp.logprob <= 0.0
        assert len(lp.top_logprobs) <= 3
        if not sampling:  # greedy, no penalty: the chosen piece is the most likely one
            assert lp.logprob == pytest.approx(lp.top_logprobs[0].logprob)


def test_the_base_alone_reports_its_own_softmax():
    result = generate(method="base", top_logprobs=2)
    model = pair().base
    seen = model.tokenize(b"Q")
    for entry in result.trace:
        p = softmax(model.logits(seen)[0].astype(np.float64))
        token = BASE_PIECES.index(entry.piece.encode())
        assert entry.logprob.logprob == pytest.approx(math.log(p[token]), rel=1e-5)
        top = [BASE_PIECES[i].decode() for i in np.argsort(-p, kind="stable")[:2]]
        assert [a.token for a in entry.logprob.top_logprobs] == top  # the end token by its own text
        seen.append(token)


def test_a_healed_route_is_reported_among_every_route_of_the_guide():
    """After the base wrote "'" for the guide's "'s", the guide's routes are the rest "s" of its
    "'s", and each whole token after its own "'": their probabilities sum to 1."""
    p = pair()
    cursor = GuideCursor(p.guide, p.bridge, p.guide.tokenize(b"QHere"))
    cursor.commit(b"'", cursor.propose())
    proposal = cursor.propose()
    tokens, rest, lp = choose_route(cursor, proposal, SamplerSettings(), np.random.default_rng(0), 40)
    assert rest == b"s" and lp.bytes == tuple(b"s")
    (route,) = [r for r in proposal.extension_routes if r.rest == b"s"]
    assert lp.logprob == pytest.approx(math.log(route.mass), rel=1e-6)
    assert sum(math.exp(a.logprob) for a in lp.top_logprobs) == pytest.approx(1.0, rel=1e-5)
    assert lp.top_logprobs[0].token == "s" and "S" in [a.token for a in lp.top_logprobs]
    assert choose_route(cursor, proposal, SamplerSettings(), np.random.default_rng(0))[2] is None


def test_tokens_that_wrote_a_stop_string_are_not_the_texts():
    full = generate(method="base")
    assert [e.piece for e in full.trace][:3] == ["Here", " the", "."] and full.text_tokens == len(full.trace)
    cut = generate(method="base", stop=["e."])  # " the" writes the stop's start, "." completes it
    assert cut.text == "Here th" and cut.stop_reason == "stop"
    assert cut.text_tokens == 2 and len(cut.trace) == 3
    assert generate(method="base", stop=["Here"]).text_tokens == 0
