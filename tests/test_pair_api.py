"""The Python API takes what people pass it: OpenAI-style message dicts, keyword settings, a
`with` block, and a clear error when two generations are interleaved on one pair."""

import threading

import pytest
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.engine.settings import GenerationSettings
from blendin_local.errors import BlendinError
from blendin_local.interfaces.cli import main
from blendin_local.pair import BlendPair, InterleavedGeneration

QUESTION = "What is the capital of France?"


def test_message_dicts_give_the_same_answer_as_a_prompt_string(default_pair):
    settings = GenerationSettings(max_tokens=8, system="Be brief.")
    by_string = default_pair.generate(QUESTION, settings).text
    as_dicts = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    assert default_pair.generate(as_dicts, max_tokens=8).text == by_string
    as_parts = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "What is the capital"}, {"type": "text", "text": " of France?"}],
        },
    ]
    assert default_pair.generate(as_parts, max_tokens=8).text == by_string


def test_keyword_settings_are_the_settings_fields(default_pair):
    by_keywords = default_pair.generate(QUESTION, max_tokens=6, method="nudging")
    by_settings = default_pair.generate(QUESTION, GenerationSettings(max_tokens=6, method="nudging"))
    assert by_keywords.method == "nudging" and by_keywords.n_tokens <= 6
    assert by_keywords.text == by_settings.text
    # Keywords override the settings object's fields and keep the rest.
    over = default_pair.generate(QUESTION, GenerationSettings(max_tokens=6, method="base"), max_tokens=3)
    assert over.method == "base" and over.n_tokens == 3


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"max_tokenz": 4}, "unknown setting 'max_tokenz'"),
        ({"max_tokens": 0}, "invalid max_tokens"),
        ({"method": "magic"}, "invalid method"),
        ({"temperature": "hot"}, "invalid temperature"),
    ],
)
def test_a_bad_keyword_setting_is_one_line_before_anything_runs(default_pair, overrides, words):
    with pytest.raises(BlendinError, match=words) as caught:
        default_pair.generate(QUESTION, **overrides)
    assert "\n" not in str(caught.value)


def test_a_bad_conversation_is_one_line(default_pair):
    with pytest.raises(BlendinError, match="the last message must be the user's"):
        default_pair.generate([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    with pytest.raises(BlendinError, match="only text content parts"):
        default_pair.generate([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


def test_a_with_block_closes_the_models():
    with BlendPair.load("smollm2-135m-instruct", "smollm2-135m-instruct") as pair:
        assert pair.generate(QUESTION, max_tokens=2, method="guide").n_tokens == 2
        closed = []
        for model in (pair.base, pair.guide):
            original = model.close
            model.close = lambda original=original: (closed.append(True), original())
    assert closed == [True, True]


def scripted_pair() -> BlendPair:
    pieces = [b"a", b"b", b" ", b"Question", b":", b"\n", b"Answer", EOS]
    steady = ScriptedModel("steady", pieces, lambda fed: {b"a": 5.0, b"b": 1.0})
    guide = ScriptedModel("guide", pieces, lambda fed: {b"b": 5.0, b"a": 1.0})
    scripted = ScriptedPair(steady, guide)
    return BlendPair(scripted.base, scripted.guide, scripted.bridge)


def test_stepping_a_superseded_generation_is_a_clear_error_and_the_newer_one_is_untouched():
    pair = scripted_pair()
    alone = pair.generate("q", max_tokens=5, base_prompt="raw", guide_prompt="raw").text
    first = pair.stream("q", max_tokens=5, base_prompt="raw", guide_prompt="raw")
    next(first)
    second = pair.start("q", max_tokens=5, base_prompt="raw", guide_prompt="raw")
    with pytest.raises(InterleavedGeneration, match="another generation started on this pair"):
        next(first)
    assert second.run().text == alone
    # A finished generation leaves the pair free; abandoning one mid-way is not an error either.
    assert pair.generate("q", max_tokens=5, base_prompt="raw", guide_prompt="raw").text == alone


def test_a_second_thread_cannot_use_the_pair_while_a_step_runs():
    pair = scripted_pair()
    entered, release = threading.Event(), threading.Event()
    rule = pair.base.rule

    def slow_rule(fed):
        entered.set()
        release.wait(10)
        return rule(fed)

    pair.base.rule = slow_rule
    generation = pair.start("q", max_tokens=1, base_prompt="raw", guide_prompt="raw", method="base")
    worker = threading.Thread(target=generation.run)
    worker.start()
    assert entered.wait(10)
    try:
        with pytest.raises(InterleavedGeneration, match="generating in another thread"):
            pair.start("q", max_tokens=1, base_prompt="raw", guide_prompt="raw", method="base")
    finally:
        release.set()
        worker.join(10)
    pair.base.rule = rule
    assert pair.generate("q", max_tokens=1, base_prompt="raw", guide_prompt="raw", method="base").text == "a"


def test_a_named_pair_loads_with_its_own_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    model = "smollm2-135m-instruct"
    main(["pair", "add", "tiny", "--base", model, "--guide", model, "--gamma", "1.01", "--ctx-size", "512"])
    with BlendPair.load(pair="tiny") as pair:
        assert pair.defaults.gamma == 1.01 and pair.base.n_ctx == 512
        assert pair.generate(QUESTION, max_tokens=3).n_interventions == 3  # gamma above 1: every token
        assert pair.generate(QUESTION, max_tokens=3, gamma=0.0).n_interventions == 0  # a keyword wins
    with pytest.raises(BlendinError, match="unknown pair 'nope'"):
        BlendPair.load(pair="nope")
