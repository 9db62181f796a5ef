"""Prompt forms: the paper's plain form, custom formats, raw, and the guide's chat template; a
custom format is parsed, never given to str.format; a prompt too long for the context is refused
before, or while, it is tokenized (issue 12)."""

import re
import string
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scripted_model import EOS, ScriptedModel, ScriptedPair

from blendin_local.backends.llama import LoadOptions
from blendin_local.engine.generation import Generation, StepEvent
from blendin_local.engine.model import ContextFull
from blendin_local.engine.prompts import (
    FEWSHOT_END,
    FEWSHOT_EXAMPLES,
    PLAIN_FORMAT,
    Message,
    PromptFormat,
    PromptFormatError,
    PromptTooLong,
    check_style,
    longest_piece,
    prompt_byte_limit,
    prompt_tokens,
    render_chat,
    render_fewshot,
    render_format,
    render_raw,
    utf8_problem,
)
from blendin_local.engine.settings import GenerationSettings
from blendin_local.errors import BlendinError

CONVERSATION = [
    Message("system", "Be brief."),
    Message("user", "Hi?"),
    Message("assistant", "Hello."),
    Message("user", "2+2?"),
]


def test_plain_form_is_the_papers():
    assert render_format(PLAIN_FORMAT, [Message("system", "S"), Message("user", "Q")]) == "S\nQuestion: Q\n"
    assert render_format(PLAIN_FORMAT, [Message("user", "Q")]) == "Question: Q\n"


def test_plain_form_of_a_conversation():
    # The base writes its answer label itself, into its prompt (answer_label.py): earlier answers carry it.
    assert render_format(PLAIN_FORMAT, CONVERSATION) == "Be brief.\nQuestion: Hi?\nAnswer: Hello.\nQuestion: 2+2?\n"


def test_custom_format():
    fmt = check_style("{system} | Q: {prompt}\nA:")
    assert render_format(fmt, [Message("system", "S"), Message("user", "x")]) == "S | Q: x\nA:"


@pytest.mark.parametrize("bad", ["no placeholder", "{prompt} {other}"])
def test_bad_custom_formats_are_refused(bad):
    with pytest.raises(BlendinError):
        check_style(bad)


def test_raw_is_the_prompt_alone():
    assert render_raw(CONVERSATION) == "Hi?Hello.2+2?"


@pytest.mark.models
def test_guide_chat_template_from_gguf_metadata(default_pair):
    text = render_chat(default_pair.guide, CONVERSATION)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    tokens = prompt_tokens(default_pair.guide, CONVERSATION, "chat")
    im_start = default_pair.guide.tokenize(b"<|im_start|>", special=True)
    assert len(im_start) == 1 and tokens[0] == im_start[0]  # parsed as the control token, no BOS added twice


@pytest.mark.models
def test_base_plain_prompt_starts_with_bos(default_pair):
    tokens = prompt_tokens(default_pair.base, [Message("user", "Hi")], "plain")
    assert tokens[0] == default_pair.base.bos_id and tokens.count(default_pair.base.bos_id) == 1


@pytest.mark.models
def test_a_model_without_chat_template_is_refused_clearly(default_pair):
    with pytest.raises(BlendinError, match="no chat template"):
        prompt_tokens(default_pair.base, [Message("user", "Hi")], "chat")


# -- the few-shot style (issue 14) ---------------------------------------------------------------


def test_fewshot_is_the_examples_then_the_question_and_an_open_answer():
    text = render_fewshot([Message("user", "Why is the sky blue?")])
    assert text.startswith("Question: " + FEWSHOT_EXAMPLES[0][0] + "\nAnswer: " + FEWSHOT_EXAMPLES[0][1] + "\n")
    for question, answer in FEWSHOT_EXAMPLES:
        assert f"Question: {question}\nAnswer: {answer}\n{FEWSHOT_END}\n\n" in text
    assert text.count(FEWSHOT_END) == len(FEWSHOT_EXAMPLES)
    assert text.endswith(f"{FEWSHOT_END}\n\nQuestion: Why is the sky blue?\nAnswer:")  # the base answers next


def test_fewshot_puts_the_system_prompt_first_and_earlier_turns_after_the_examples():
    text = render_fewshot(CONVERSATION)
    assert text.startswith("Be brief.\nQuestion: " + FEWSHOT_EXAMPLES[0][0])
    assert text.endswith(f"{FEWSHOT_END}\n\nQuestion: Hi?\nAnswer: Hello.\n{FEWSHOT_END}\n\nQuestion: 2+2?\nAnswer:")
    assert text.count(FEWSHOT_END) == len(FEWSHOT_EXAMPLES) + 1 and text.count("Be brief.") == 1


def test_fewshot_is_a_builtin_style_that_renders_user_text_as_it_is():
    assert check_style("fewshot", "base_prompt") == "fewshot"
    text = render_fewshot([Message("system", "{system}"), Message("user", "{prompt} {{x}}")])
    assert text.startswith("{system}\n") and text.endswith("Question: {prompt} {{x}}\nAnswer:")
    model = CountingModel(1000)
    assert prompt_tokens(model, CONVERSATION, "fewshot") == model.tokenize(render_fewshot(CONVERSATION).encode())


def test_only_the_fewshot_style_stops_at_its_end_marker():
    assert FEWSHOT_END in GenerationSettings(base_prompt="fewshot").stop_strings()
    assert FEWSHOT_END not in GenerationSettings(base_prompt="plain").stop_strings()


MARKER_PIECES = [EOS, b":", b" Paris", b".", b"\n", b"\n\n", b"<", b"END", b">", b"Question:"]


@pytest.mark.parametrize("before_marker", [b"\n", b"<"])
def test_the_end_marker_ends_the_answer_as_the_base_s_eos_and_never_shows(before_marker):
    """The base answers, writes the marker (after a line break, or right after the answer), and
    would go on with the next question."""
    following = {b":": b" Paris", b" Paris": b".", b".": before_marker, b"\n": b"<", b"<": b"END", b"END": b">"}
    following |= {b">": b"\n\n", b"\n\n": b"Question:", b"Question:": b" Paris"}

    def answering_base(seen):
        return {following[seen[-1]]: 10.0}

    model = ScriptedModel("base", MARKER_PIECES, answering_base)
    settings = GenerationSettings(method="base", base_prompt="fewshot", guide_prompt="plain", max_tokens=20)
    generation = Generation(ScriptedPair(model, model), [Message("user", "Capital of France?")], settings)
    events = list(generation)
    streamed = "".join(event.text for event in events)
    result = events[-1].result
    assert result.text == streamed == "Paris."
    assert result.stop_reason == "eos" and sum(isinstance(event, StepEvent) for event in events) == result.n_tokens


@pytest.mark.models
def test_the_fewshot_prompt_fits_well_within_the_default_base_context(default_pair):
    conversation = [Message("system", "You are a helpful assistant."), Message("user", "Why is the sky blue?")]
    tokens = prompt_tokens(default_pair.base, conversation, "fewshot")
    assert len(tokens) <= LoadOptions().n_ctx // 10  # re-read on every request: a few hundred tokens
    assert tokens[0] == default_pair.base.bos_id


@pytest.mark.models
def test_the_default_base_ends_its_fewshot_answer_with_the_marker(default_pair):
    settings = GenerationSettings(method="base", base_prompt="fewshot", max_tokens=64)
    result = default_pair.generate("What is the capital of France?", settings)
    assert result.stop_reason == "eos" and "Paris" in result.text
    assert "<" not in result.text and result.text == result.text.strip()


# -- custom formats: parsed, rendered by concatenation ------------------------------------------

ISSUE_FORMATS = [
    "{prompt:{prompt.__class__.__mro__}}",
    "{prompt:{system.__class__.__base__.__subclasses__}}",
    "{prompt.__class__}",
    "{prompt:{system.__class__}}",
    "{prompt!r}",
    "{prompt!x}",
    "{prompt:d}",
    "{prompt:>100}",
    "{prompt:>10000000}",
    "{0}",
    "{}",
    "{prompt[0]}",
    "{system.upper} {prompt}",
    "{prompt",
    "{prompt}}x}",
    "}{prompt}",
    "}{",
    "{prompt} {other}",
    "{{prompt}}",
    "{ prompt}",
]
# Units that random formats are built from: valid pieces, escapes, and every kind of trouble.
FORMAT_UNITS = [
    "{prompt}",
    "{system}",
    "{{",
    "}}",
    "{",
    "}",
    "a",
    "Q: ",
    "\n",
    ":",
    "!r",
    "!",
    ".",
    "[0]",
    ">9",
    "{0}",
    "{}",
    "{prompt",
    "prompt}",
    "{prompt:",
    "{system.x}",
    "{prompt!s}",
    "{x}",
    "\x00",
    "\ud800",
    "é",
    "{prompt!r}",
    "{prompt:>9}",
    "{prompt.__class__}",
    "{system[0]}",
    "{prompt:{system}}",
]
SAFE_UNITS = ["{prompt}", "{system}", "{{", "}}", "a", "Q: ", "\n", ":", "!", ".", "[0]", "é", "\x00"]
FORMATS = st.one_of(
    st.lists(st.sampled_from(SAFE_UNITS), max_size=12).map("".join),
    st.lists(st.sampled_from(FORMAT_UNITS), max_size=12).map("".join),
    st.text(max_size=40),
)
VALUES = st.text(max_size=30)


@pytest.mark.parametrize("fmt", ISSUE_FORMATS)
def test_formats_that_read_internals_or_break_str_format_are_refused_in_one_line(fmt):
    with pytest.raises(PromptFormatError) as caught:
        check_style(fmt, "base_prompt")
    message = str(caught.value)
    assert message.startswith("invalid base_prompt: ") and "\n" not in message
    assert "<class" not in message and "0x" not in message and "<built-in" not in message  # nothing evaluated


def test_a_bad_format_names_what_is_wrong():
    def problem(fmt):
        with pytest.raises(PromptFormatError) as caught:
            PromptFormat.parse(fmt)
        return caught.value.problem

    assert "format spec" in problem("{prompt:>9}")
    assert "conversion" in problem("{prompt!r}")
    assert "attribute" in problem("{prompt.__class__}")
    assert "indexes" in problem("{prompt[0]}")
    assert "positional" in problem("{0}") and "positional" in problem("{}")
    assert "not a known placeholder" in problem("{x} {prompt}")
    assert "character 8" in problem("{prompt}}x}") and "closes no placeholder" in problem("}{prompt}")
    assert "opens no placeholder" in problem("{prompt") and "opens no placeholder" in problem("{prompt:{system}}")
    assert "needs a {prompt}" in problem("{system}")
    assert "byte 0xff at character 1" in problem("Q\udcff{prompt}")


def test_existing_formats_render_byte_for_byte_as_before():
    conversation = [
        Message("system", "S {x}"),
        Message("user", "a {b} }c{"),
        Message("assistant", "A"),
        Message("user", "second"),
    ]
    for fmt in ("{system}\nQ: {prompt}\nA:", "{prompt}", "[{{{system}}}] {prompt} {{literal}}", "{prompt}{prompt}"):
        before = fmt.format(system="S {x}", prompt="a {b} }c{") + "A\n" + fmt.format(system="", prompt="second")
        assert render_format(check_style(fmt), conversation) == before


def safe_reference(fmt: str, prompt: str, system: str) -> str | None:
    """str.format's rendering when every field of `fmt` is exactly {prompt} or {system}, else None."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return None
    if any(
        name is not None and (name not in ("prompt", "system") or spec or conversion)
        for _, name, spec, conversion in fields
    ):
        return None
    if all(name != "prompt" for _, name, _, _ in fields) or utf8_problem(fmt):
        return None
    # An empty spec or conversion ("{prompt:}") parses as none at all, but it was written: the
    # product refuses it as the spec it is.
    if re.search(r"\{(?:prompt|system)[:!]", re.sub(r"\{\{|\}\}", "", fmt)):
        return None
    return fmt.format(prompt=prompt, system=system)


@settings(max_examples=3000, deadline=None, database=None)
@given(fmt=FORMATS, prompt=VALUES, system=VALUES)
@example(fmt="{prompt!r}{prompt}", prompt="a", system="b")
@example(fmt="{prompt:>9}{prompt}", prompt="a", system="b")
@example(fmt="{system.__class__} {prompt}", prompt="a", system="b")
@example(fmt="{prompt:}", prompt="", system="")
def test_a_format_is_refused_or_renders_as_str_format_would_on_safe_fields(fmt, prompt, system):
    try:
        parsed = PromptFormat.parse(fmt, "guide_prompt")
    except PromptFormatError as e:  # nothing but this one error, and only for what is not safe
        assert safe_reference(fmt, prompt, system) is None, e
        assert str(e).startswith("invalid guide_prompt: ") and "\n" not in str(e)
        return
    reference = safe_reference(fmt, prompt, system)
    assert reference is not None and parsed.render(prompt, system) == reference
    assert parsed.rendered_length(prompt, system) == len(reference)
    # Linear: each character of the format gives at most one of output or one value.
    assert len(reference) <= len(fmt) * max(1, len(prompt), len(system))


def test_a_format_repeated_past_the_limit_is_measured_not_built():
    fmt = "{prompt}" * 100_000  # with a 1 MB prompt, 100 GB if it were built
    conversation = [Message("user", "x" * 1_000_000)] * 3
    started = time.perf_counter()
    assert render_format(fmt, conversation, max_chars=10_000_000) is None
    assert time.perf_counter() - started < 2


# -- the context bound --------------------------------------------------------------------------

SCRIPTED_PIECES = [EOS, b"a", b"b", b"ab", b"abab", b" ", b"\n", b"<ctl>"]


class CountingModel(ScriptedModel):
    """A scripted model that records the length of every text it tokenizes."""

    def __init__(self, n_ctx: int):
        super().__init__("counting", SCRIPTED_PIECES, lambda seen: {EOS: 1.0})
        self.n_ctx = n_ctx
        self.tokenized: list[int] = []

    def tokenize(self, text, *, add_bos=False, special=False):
        self.tokenized.append(len(text))
        return super().tokenize(text, add_bos=add_bos, special=special)


def test_the_longest_piece_counts_control_tokens_as_written():
    model = CountingModel(100)
    assert longest_piece(model) == len(b"<eos>") and prompt_byte_limit(model) == 500


def test_a_prompt_longer_than_the_context_could_hold_is_refused_before_tokenizing():
    model = CountingModel(100)
    for style in ("plain", "raw", "{prompt}{prompt}", "{system}{prompt}"):
        with pytest.raises(PromptTooLong, match="too long for counting, whose context holds 100 tokens") as caught:
            prompt_tokens(model, [Message("user", "abab" * 200)], style)
        assert isinstance(caught.value, ContextFull) and "\n" not in str(caught.value)
    assert model.tokenized == []


def test_a_prompt_of_many_short_tokens_is_refused_after_tokenizing_little_more_than_fits():
    model = CountingModel(100)
    with pytest.raises(PromptTooLong, match="alone take"):
        prompt_tokens(model, [Message("user", " \n" * 240)], "raw")  # 480 bytes, under the byte limit
    assert max(model.tokenized) <= 2 * (100 + longest_piece(model))


def test_a_prompt_that_fits_gets_the_same_tokens_as_one_tokenization():
    model = CountingModel(100)
    text = "abab" * 90 + "ab a"  # 364 bytes of 94 tokens: tokenized in prefixes first
    assert prompt_tokens(model, [Message("user", text)], "raw") == ScriptedModel.tokenize(model, text.encode())
    assert len(model.tokenized) > 1


def test_a_prompt_with_a_lone_surrogate_is_one_error():
    with pytest.raises(BlendinError, match="not valid UTF-8 \\(lone surrogate U\\+D800 at character 2\\)"):
        prompt_tokens(CountingModel(100), [Message("user", "ab\ud800")], "raw")


@pytest.mark.models
def test_the_worst_prompts_tokenize_fast_on_the_real_models(default_pair):
    """llama.cpp took 134 s for 196 KB of " \\n" on Gemma 3 (4096 context): the prefixes stop it early."""
    for model in (default_pair.base, default_pair.guide):
        limit = prompt_byte_limit(model)
        for unit in (" \n", " \t\n\r", "<", " "):
            text = (unit * limit)[:limit]
            for style in ("raw", "chat") if model is default_pair.guide else ("raw",):
                started = time.perf_counter()
                try:
                    prompt_tokens(model, [Message("user", text)], style)
                except PromptTooLong:
                    pass
                assert time.perf_counter() - started < 5, (model.name, unit, style)
