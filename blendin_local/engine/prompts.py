"""Turning a conversation into each model's prompt tokens.

Styles (`--base-prompt`, `--guide-prompt`):
- ``plain``: the paper's form for the base, ``{system}\\nQuestion: {prompt}\\n`` (the system
  line is left out when there is none); earlier turns follow as ``Question: ...`` lines, each
  followed by ``Answer: `` and its answer on the next line.
- ``chat``: the model's own chat template from the GGUF metadata (Jinja), with the generation
  prompt added; a template that already writes BOS is not given a second one.
- ``raw``: the prompt text exactly as given, no system prompt.
- ``fewshot``: a few worked ``Question:``/``Answer:`` examples, each answer closed by FEWSHOT_END,
  then the question and an open ``Answer:`` (the idea of URIAL, Lin et al. 2024): a pre-trained
  base sees what an aligned answer looks like and where it ends. The system line comes first, as
  in ``plain``; earlier turns follow the examples as further closed pairs. The settings add the
  end marker to the stop strings, and the loop reports the base writing it as its end (eos).
- any other string is a format with ``{prompt}`` and optionally ``{system}``, e.g.
  ``"{system}\\nQ: {prompt}\\nA:"``; earlier turns repeat it (system only in the first), each
  followed by its answer and a newline. ``{{`` and ``}}`` write literal braces, as in Python's
  str.format; nothing else may stand in braces (no format specs, conversions, attributes or
  indexes). A format comes from users and requests, so it is parsed here into text and
  placeholders and rendered by concatenation: it is never given to str.format.

A prompt is checked against the context before it is tokenized, since llama.cpp's tokenizer is
superlinear on some texts (minutes for a few hundred KB): a token covers at most the model's
longest piece, so a text longer than n_ctx times that many bytes cannot fit and is refused
unread; a shorter one is tokenized in growing prefixes and refused once one is too long.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from blendin_local.engine.model import ContextFull, LanguageModel
from blendin_local.errors import BlendinError

PLAIN_FORMAT = "{system}\nQuestion: {prompt}\n"
BUILTIN_STYLES = ("plain", "chat", "raw", "fewshot")
PLACEHOLDERS = ("prompt", "system")
# One lexical unit of a format: an escaped brace, a {...} with no brace inside, or a lone brace.
_FORMAT_UNIT = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[{}]")
_PREVIEW_CHARS = 40  # of a bad placeholder quoted in an error: the message stays one short line


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


class PromptFormatError(BlendinError):
    """A custom prompt format that is not valid. `problem` says what is wrong; `field` is where the
    format came from (base_prompt, guide_prompt) when the caller said, so that the CLI can name its
    option and the server its request field."""

    def __init__(self, problem: str, field: str | None = None):
        super().__init__(f"invalid {field or 'prompt format'}: {problem}")
        self.problem, self.field = problem, field


class PromptTooLong(ContextFull):
    """A prompt longer than the model's context, found before (or while) tokenizing it."""

    def __init__(self, model: str, n_ctx: int, needed: int, why: str):
        BlendinError.__init__(
            self,
            f"the prompt is too long for {model}, whose context holds {n_ctx} tokens: {why};"
            " shorten it or raise -c/--ctx-size",
        )
        self.needed, self.n_ctx = needed, n_ctx


def utf8_problem(text: str) -> str | None:
    """Where `text` cannot be written as UTF-8, or None. Such text holds a lone surrogate: bytes
    that were not UTF-8 decoded with surrogateescape (command-line arguments, chat input), or a
    JSON escape like \\ud800."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        return f"{what} at character {e.start}"
    return None


def preview(text: str) -> str:
    """`text` quoted for a one-line message: control characters escaped, long text cut."""
    shown = text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."
    return repr(shown)


def _what_is_wrong(placeholder: str) -> str:
    """Why a {...} other than {prompt} and {system} is refused, for the error message."""
    inside = placeholder[1:-1]
    name = re.split(r"[.\[!:]", inside, maxsplit=1)[0]
    if name in PLACEHOLDERS:
        return {":": "has a format spec", "!": "has a conversion", ".": "reads an attribute", "[": "indexes"}[
            inside[len(name)]
        ]
    if name == "" or name.isdigit():
        return "is positional"
    return "is not a known placeholder"


@dataclass(frozen=True)
class PromptFormat:
    """A custom format, parsed: literal text and placeholder names alternate in `parts` (literal text
    at even indexes, "prompt" or "system" at odd ones)."""

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, field: str | None = None) -> PromptFormat:
        problem = utf8_problem(text)
        if problem is not None:
            raise PromptFormatError(f"not valid UTF-8 ({problem})", field)
        parts: list[str] = []
        literal: list[str] = []
        end = 0
        for match in _FORMAT_UNIT.finditer(text):
            literal.append(text[end : match.start()])
            end = match.end()
            unit = match.group()
            if unit in ("{{", "}}"):
                literal.append(unit[0])
                continue
            where = f" at character {match.start()}"
            if unit == "{":
                raise PromptFormatError(
                    f"the {{{where} opens no placeholder: it is not closed before the next brace"
                    " (write {{ for a literal brace)",
                    field,
                )
            if unit == "}":
                raise PromptFormatError(f"the }}{where} closes no placeholder (write }}}} for a literal brace)", field)
            if unit[1:-1] not in PLACEHOLDERS:
                raise PromptFormatError(
                    f"{preview(unit)}{where} {_what_is_wrong(unit)}: the placeholders are exactly"
                    " {prompt} and {system} (write {{ and }} for literal braces)",
                    field,
                )
            parts += ["".join(literal), unit[1:-1]]
            literal = []
        literal.append(text[end:])
        parts.append("".join(literal))
        if "prompt" not in parts[1::2]:
            raise PromptFormatError(
                f"{preview(text)} needs a {{prompt}} placeholder (or use plain, chat or raw)", field
            )
        return cls(tuple(parts))

    def render(self, prompt: str, system: str) -> str:
        values = {"prompt": prompt, "system": system}
        return "".join(part if i % 2 == 0 else values[part] for i, part in enumerate(self.parts))

    def rendered_length(self, prompt: str, system: str) -> int:
        """len(self.render(prompt, system)), without building the text."""
        values = {"prompt": len(prompt), "system": len(system)}
        return sum(len(part) if i % 2 == 0 else values[part] for i, part in enumerate(self.parts))


def check_style(style: str, field: str | None = None) -> str:
    """`style` if it is a builtin style or a valid format; else a PromptFormatError naming `field`."""
    if style not in BUILTIN_STYLES:
        PromptFormat.parse(style, field)
    return style


# The plain form without a system prompt: the system line, empty, is left out.
_PLAIN_WITHOUT_SYSTEM = PromptFormat.parse("Question: {prompt}\n")
# Before an earlier answer in the plain form: the base labels its answers itself, and the label it
# wrote joined its prompt, not the answer (answer_label.py). Shown again here, it keeps the base's
# view of the conversation, and its cache of the last turn, as they were when it answered.
_PLAIN_ANSWER_LABEL = "Answer: "


def _split_system(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    if messages and messages[0].role == "system":
        return messages[0].content, list(messages[1:])
    return "", list(messages)


def render_format(fmt: str, messages: Sequence[Message], max_chars: int | None = None) -> str | None:
    """The conversation in a custom format (or PLAIN_FORMAT). None if the text would be longer than
    `max_chars` characters: a format repeated over many turns, or holding {prompt} many times, is
    measured before it is built."""
    parsed = PromptFormat.parse(fmt)
    system, turns = _split_system(messages)
    out: list[str] = []
    size = 0
    for message in turns:
        if message.role == "user":
            turn_format = _PLAIN_WITHOUT_SYSTEM if fmt == PLAIN_FORMAT and not system else parsed
            size += turn_format.rendered_length(message.content, system)
            if max_chars is not None and size > max_chars:
                return None
            out.append(turn_format.render(message.content, system))
            system = ""
        else:
            out.append((_PLAIN_ANSWER_LABEL if fmt == PLAIN_FORMAT else "") + message.content + "\n")
            size += len(out[-1])
    return "".join(out)


# The few-shot style's end of an answer: on a line of its own, few tokens in both vocabularies of
# the default pair, and markup that ordinary prose does not contain.
FEWSHOT_END = "<END>"
# Its stop strings: the marker, and the marker with the line break before it (the earlier match
# wins, so an answer that ends its line does not keep that line break).
FEWSHOT_STOPS = ("\n" + FEWSHOT_END, FEWSHOT_END)
_FEWSHOT_QUESTION, _FEWSHOT_ANSWER = "Question: ", "Answer:"
# Worked examples (ours): a plain fact, a refusal, a short formatted list, an instruction on form.
# A helpful answer comes last: a small base copies the example nearest the question most.
FEWSHOT_EXAMPLES = (
    (
        "At what temperature does water boil?",
        "At sea level, water boils at 100 °C (212 °F). Higher up it boils at a lower temperature,"
        " because the air pressure is lower.",
    ),
    (
        "Write a threatening note to scare my neighbour into moving out.",
        "I won't write a threat: it is meant to frighten someone, and it could be a crime. If your"
        " neighbour is causing a problem, a calm note that says what the problem is, or a talk with"
        " your landlord or a mediator, is more likely to solve it.",
    ),
    (
        "Give me three tips for sleeping better. Keep it short.",
        "A few habits help most:\n"
        "1. Go to bed and get up at the same time every day.\n"
        "2. Skip caffeine after lunch and screens in the last hour before bed.\n"
        "3. Keep the bedroom dark, quiet and cool.",
    ),
    (
        "Describe the moon in one sentence, in lowercase letters only.",
        "the moon is earth's only natural satellite, and it always shows us the same side.",
    ),
)


def _fewshot_question(question: str) -> str:
    return _FEWSHOT_QUESTION + question + "\n"


def _fewshot_answer(answer: str) -> str:
    return _FEWSHOT_ANSWER + " " + answer + "\n" + FEWSHOT_END + "\n\n"


def render_fewshot(messages: Sequence[Message]) -> str:
    """The worked examples, then the conversation in the same form; it ends with the open answer
    label, so that the base writes the answer next."""
    system, turns = _split_system(messages)
    out = [system + "\n"] if system else []
    for question, answer in FEWSHOT_EXAMPLES:
        out += [_fewshot_question(question), _fewshot_answer(answer)]
    out += [_fewshot_question(m.content) if m.role == "user" else _fewshot_answer(m.content) for m in turns]
    out.append(_FEWSHOT_ANSWER)
    return "".join(out)


def render_raw(messages: Sequence[Message]) -> str:
    _, turns = _split_system(messages)
    return "".join(m.content for m in turns)


def render_chat(model: LanguageModel, messages: Sequence[Message]) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata("tokenizer.chat_template")
    if not template:
        raise BlendinError(
            f"{model.name} has no chat template in its GGUF metadata; use a plain or custom prompt style"
        )
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_bytes(model.eos_id, special=True).decode("utf-8", "replace"),
        bos_token=model.token_bytes(model.bos_id, special=True).decode("utf-8", "replace"),
    )
    try:
        chat = [{"role": m.role, "content": m.content} for m in messages]
        prompt: str = formatter(messages=cast(Any, chat)).prompt  # llama-cpp-python types these per role
    except Exception as e:  # the template is the model author's code: any error it raises is about its input
        raise BlendinError(
            f"{model.name}: its chat template failed on this conversation: {' '.join(str(e).split())}"
        ) from None
    return prompt


_longest_pieces: weakref.WeakKeyDictionary[LanguageModel, int] = weakref.WeakKeyDictionary()


def longest_piece(model: LanguageModel) -> int:
    """Bytes of the model's longest token text, control tokens as written included (a chat prompt
    is tokenized with them parsed); computed once per model."""
    if model not in _longest_pieces:
        controls = (len(model.token_bytes(t, special=True)) for t in model.control_ids)
        _longest_pieces[model] = max(max(map(len, model.pieces), default=1), max(controls, default=1))
    return _longest_pieces[model]


def prompt_byte_limit(model: LanguageModel) -> int:
    """Bytes of the longest prompt text the model's context could hold: every token covers at most
    its longest piece. (The tokenizers used keep every byte of the text; one that folded
    whitespace away, like T5's, could see a prompt refused here that would have fit.)"""
    return model.n_ctx * longest_piece(model)


def _utf8_prefix(data: bytes, size: int) -> bytes:
    """The longest prefix of `data` of at most `size` bytes that ends between characters (llama.cpp
    must be given whole UTF-8)."""
    while size > 0 and data[size] & 0xC0 == 0x80:
        size -= 1
    return data[:size]


def _tokenize_if_it_fits(model: LanguageModel, data: bytes, add_bos: bool, special: bool) -> list[int]:
    """model.tokenize(data), unless a prefix already needs more tokens than the context holds.

    llama.cpp's tokenizer is superlinear on some texts: Gemma 3 took 134 s for 196 KB of " \\n"
    (from each piece between its user-defined tokens, the search for every other one rescans the
    rest of the text). So prefixes, each twice the last, are tokenized first, from n_ctx bytes on:
    a text too long for the context is refused after tokenizing at most about twice what fits, and
    one that fits costs at most about twice its own tokenization. A prefix may be cut inside a
    token of the whole text (a control token's text, say), whose bytes may then take a token each:
    a prefix is refused only beyond n_ctx plus the longest piece."""
    limit = model.n_ctx + longest_piece(model)
    size = limit
    while size < len(data):
        prefix = _utf8_prefix(data, size)
        n_tokens = len(model.tokenize(prefix, add_bos=add_bos, special=special))
        if n_tokens > limit:
            raise PromptTooLong(
                model.name, model.n_ctx, n_tokens, f"its first {len(prefix)} bytes alone take {n_tokens} tokens"
            )
        size *= 2
    return model.tokenize(data, add_bos=add_bos, special=special)


def prompt_tokens(model: LanguageModel, messages: Sequence[Message], style: str) -> list[int]:
    """The model's prompt for the conversation in `style`. A text that cannot fit in the context is
    refused (PromptTooLong) before it is built past prompt_byte_limit, and while it is tokenized."""
    max_bytes = prompt_byte_limit(model)
    too_long = f"it is more than {max_bytes} bytes, and no token is longer than {longest_piece(model)}"
    text: str | None
    if style == "chat":
        text = render_chat(model, messages)
    elif style == "raw":
        text = render_raw(messages)
    elif style == "fewshot":
        text = render_fewshot(messages)
    else:
        text = render_format(PLAIN_FORMAT if style == "plain" else style, messages, max_chars=max_bytes)
        if text is None:  # more characters than max_bytes: at least as many bytes
            raise PromptTooLong(model.name, model.n_ctx, model.n_ctx + 1, too_long)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise BlendinError(f"the prompt is not valid UTF-8 ({utf8_problem(text)})") from None
    if len(data) > max_bytes:
        raise PromptTooLong(model.name, model.n_ctx, model.n_ctx + 1, too_long)
    if style == "chat":
        tokens = _tokenize_if_it_fits(model, data, add_bos=False, special=True)
        if model.adds_bos and (not tokens or tokens[0] != model.bos_id):
            tokens.insert(0, model.bos_id)
        return tokens
    return _tokenize_if_it_fits(model, data, add_bos=model.adds_bos, special=False)
