"""The base's own answer label ("Answer:") joins its prompt: neither the guide nor the user is shown
it, nor the whitespace after it (engine/answer_label.py). Scripted models, whose preferences are
known; tests/engine/test_invariants.py checks the invariants on the real pair."""

import pytest
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.answer_label import (
    AnswerText,
    LeadingWhitespace,
    is_answer_label,
    may_become_answer_label,
)
from blendin_local.engine.generation import Generation
from blendin_local.engine.likelihood import forced_logprob
from blendin_local.engine.prompts import Message
from blendin_local.engine.settings import GenerationSettings

PIECES = [EOS, b"Question:", b" ", b"\n", b"\n\n", b"Answer", b":", b"A:", b"A", b" The", b"The", b" cup", b" tea"]
PIECES += [b" of", b" is", b" hot", b"."]
MESSAGES = [Message("user", "How do I brew it?")]  # no piece of the answer in it
GUIDE_TEMPLATE = "<user>{prompt}<assistant>"  # a prompt form of the guide's own, as a chat template is
FINISH = {b" tea": b" is", b" is": b" hot", b" hot": b".", b".": EOS}  # both models end the answer alike


def labelling_base(seen):
    """Writes "Answer:", then is unsure how to start; once started, it finishes the sentence."""
    last = seen[-1]
    if b"Answer" not in seen:
        return {b"Answer": 10.0}
    if last == b"Answer":
        return {b":": 10.0}
    if last in FINISH:
        return {FINISH[last]: 10.0}
    return {b" The": 1.0, b" cup": 1.0, b"\n\n": 1.0, b" tea": 1.0}  # at the start, and after "The": unsure


def sure_labelling_base(seen):
    """Writes "Answer: The", sure of every token, then is unsure which word follows "The" (" tea",
    by a little)."""
    if b"Answer" not in seen:
        return {b"Answer": 10.0}
    following = {b"Answer": b":", b":": b" The", **FINISH}
    if seen[-1] in following:
        return {following[seen[-1]]: 10.0}
    return {b" tea": 1.2, b" cup": 1.0, b"\n\n": 1.0}


def label_echoing_guide(seen):
    """Shown an answer label as the start of its reply, it writes more labels (as SmolLM2 did);
    else it answers "The tea is hot."."""
    last = seen[-1]
    if last in (b":", b"A:"):
        return {b"\n\n": 10.0}
    if last == b"\n\n":
        return {b"A:": 10.0}
    if last in (b"The", b" The"):
        return {b" tea": 10.0}
    return {FINISH[last]: 10.0} if last in FINISH else {b"The": 10.0}


def generation(base_rule, guide_rule, **settings):
    pair = ScriptedPair(ScriptedModel("base", PIECES, base_rule), ScriptedModel("guide", PIECES, guide_rule))
    values = {"max_tokens": 12, "base_prompt": "plain", "guide_prompt": GUIDE_TEMPLATE, **settings}
    return Generation(pair, MESSAGES, GenerationSettings(**values))


def pieces(tokens):
    return [PIECES[t] for t in tokens]


def shown_to_guide(g):
    """Every response text the guide was evaluated on (its prompt left out)."""
    guide = g.pair.guide
    return [b"".join(guide.pieces[t] for t in seq[g.prompt_lengths["guide"] :]) for seq in guide.evaluated]


# -- the pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [b"Answer:", b"\nAnswer:", b"\n\n A:", b"Response:"])
def test_answer_labels(text):
    assert is_answer_label(text) and may_become_answer_label(text)


@pytest.mark.parametrize("text", [b"A cup", b"Answers:", b"A.", b"The", b"Answer: The"])
def test_words_that_only_look_like_labels_are_not(text):
    assert not is_answer_label(text) and not may_become_answer_label(text)


@pytest.mark.parametrize("text", [b"A", b"\nAns", b" Answer", b"\n", b"Resp"])
def test_the_start_of_a_label_may_still_become_one(text):
    assert may_become_answer_label(text) and not is_answer_label(text)


def test_the_answer_text_starts_at_its_first_visible_byte():
    stream = AnswerText()
    assert [stream.feed(piece) for piece in (b"\n", b" ", b" The", b"\n", b" end")] == ["", "", "The", "\n", " end"]
    assert stream.text == "The\n end"


def test_the_guide_is_shown_leading_whitespace_only_where_it_took_part():
    alone = LeadingWhitespace(hidden=True)
    assert [alone.guide_view(piece, guide_consulted=False) for piece in (b"\n", b" The", b" tea")] == [
        b"",
        b"The",
        b" tea",
    ]
    asked = LeadingWhitespace(hidden=True)
    assert asked.guide_view(b"\n", guide_consulted=True) == b"\n"  # maybe its own choice: asking again would loop
    assert asked.guide_view(b" The", guide_consulted=False) == b" The"
    assert LeadingWhitespace(hidden=False).guide_view(b" The", guide_consulted=False) == b" The"


# -- in the loop --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["nudging", "blendin"])
def test_the_guide_never_sees_the_base_label_and_the_answer_has_none(method):
    g = generation(labelling_base, label_echoing_guide, method=method)
    result = g.run()
    assert result.text == "The tea is hot." and result.stop_reason == "eos"
    assert all(not text.startswith((b"Answer", b":", b" ", b"\n")) for text in shown_to_guide(g))
    assert shown_to_guide(g)[0] == b""  # consulted at the answer's start, it was shown nothing yet
    prompt_length = g.prompt_lengths["base"]
    assert pieces(g.ctx.base.tokens[prompt_length - 2 : prompt_length]) == [b"Answer", b":"]  # its prompt's end


def test_the_guide_is_not_shown_the_space_after_the_label():
    g = generation(sure_labelling_base, label_echoing_guide, method="blendin")
    result = g.run()
    assert result.text == "The tea is hot."
    assert shown_to_guide(g)[0] == b"The"  # the base wrote " The" alone; the guide reads its reply as "The"
    assert result.trace[0].piece == " The" and result.trace[0].source == "base"


def test_the_base_alone_and_alpha_zero_agree_after_the_label():
    base = generation(sure_labelling_base, label_echoing_guide, method="base").run()
    blend = generation(sure_labelling_base, label_echoing_guide, method="blendin", alpha=0.0, gamma=1.01).run()
    assert base.text == blend.text == "The tea is hot."
    assert [e.piece for e in blend.trace] == [e.piece for e in base.trace]


def test_a_guide_that_reads_the_base_prompt_form_reads_the_label_too():
    g = generation(sure_labelling_base, sure_labelling_base, method="blendin", guide_prompt="plain")
    result = g.run()
    assert shown_to_guide(g)[0] == b"Answer: The"  # as the base reads it: blended with itself, it is itself
    assert result.text == generation(sure_labelling_base, sure_labelling_base, method="base").run().text


def test_the_label_joins_the_base_prompt_when_generation_starts_and_only_then():
    g = generation(sure_labelling_base, label_echoing_guide, method="base")
    rendered = len(g.ctx.base.tokens)
    assert g.prompt_lengths["base"] == rendered + 2  # counted at once: the room left for the answer
    forced = generation(sure_labelling_base, label_echoing_guide, method="blendin")
    forced_logprob(forced, "Answer:", " The")  # scoring forces its own label (eval's loglik)
    assert pieces(forced.ctx.base.tokens[rendered:]) == [b"Answer", b":", b" The"]
    g.run()
    assert pieces(g.ctx.base.tokens[rendered:]) == [b"Answer", b":", b" The", b" tea", b" is", b" hot", b"."]


def test_a_base_that_writes_no_label_is_unchanged():
    def answering_base(seen):
        following = {b"\n": b" The", b" The": b" tea", **FINISH}
        return {following[seen[-1]]: 10.0}

    g = generation(answering_base, label_echoing_guide, method="base")
    assert g.prompt_lengths["base"] == len(g.ctx.base.tokens)  # no label read: the peek was rolled back
    result = g.run()
    assert result.text == "The tea is hot."  # only the leading space is gone
    assert [e.piece for e in result.trace] == [" The", " tea", " is", " hot", "."]


def test_a_label_like_word_stays():
    def cup_base(seen):
        following = {b"\n": b"A", b"A": b" cup", b" cup": b" of", b" of": b" tea", **FINISH}
        return {following[seen[-1]]: 10.0}

    for method in ("base", "blendin"):
        g = generation(cup_base, label_echoing_guide, method=method)
        assert g.prompt_lengths["base"] == len(g.ctx.base.tokens)
        assert g.run().text == "A cup of tea is hot."
    assert b"".join(g.ctx.guide.state.tail) == b"A cup of tea is hot."  # the guide, never asked, saw all of it
