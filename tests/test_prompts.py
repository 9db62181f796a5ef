"""Prompt forms: the paper's plain form, custom formats, raw, and the guide's chat template."""

import pytest

from blendin_local.errors import BlendinError
from blendin_local.prompts import Message, check_style, prompt_tokens, render_chat, render_format, render_raw, PLAIN_FORMAT

CONVERSATION = [Message("system", "Be brief."), Message("user", "Hi?"), Message("assistant", "Hello."),
                Message("user", "2+2?")]


def test_plain_form_is_the_papers():
    assert render_format(PLAIN_FORMAT, [Message("system", "S"), Message("user", "Q")]) == "S\nQuestion: Q\n"
    assert render_format(PLAIN_FORMAT, [Message("user", "Q")]) == "Question: Q\n"


def test_plain_form_of_a_conversation():
    assert render_format(PLAIN_FORMAT, CONVERSATION) == "Be brief.\nQuestion: Hi?\nHello.\nQuestion: 2+2?\n"


def test_custom_format():
    fmt = check_style("{system} | Q: {prompt}\nA:")
    assert render_format(fmt, [Message("system", "S"), Message("user", "x")]) == "S | Q: x\nA:"


@pytest.mark.parametrize("bad", ["no placeholder", "{prompt} {other}"])
def test_bad_custom_formats_are_refused(bad):
    with pytest.raises(BlendinError):
        check_style(bad)


def test_raw_is_the_prompt_alone():
    assert render_raw(CONVERSATION) == "Hi?Hello.2+2?"


def test_guide_chat_template_from_gguf_metadata(default_pair):
    text = render_chat(default_pair.guide, CONVERSATION)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert text.endswith("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    tokens = prompt_tokens(default_pair.guide, CONVERSATION, "chat")
    im_start = default_pair.guide.tokenize(b"<|im_start|>", special=True)
    assert len(im_start) == 1 and tokens[0] == im_start[0]  # parsed as the control token, no BOS added twice


def test_base_plain_prompt_starts_with_bos(default_pair):
    tokens = prompt_tokens(default_pair.base, [Message("user", "Hi")], "plain")
    assert tokens[0] == default_pair.base.bos_id and tokens.count(default_pair.base.bos_id) == 1


def test_a_model_without_chat_template_is_refused_clearly(default_pair):
    with pytest.raises(BlendinError, match="no chat template"):
        prompt_tokens(default_pair.base, [Message("user", "Hi")], "chat")
