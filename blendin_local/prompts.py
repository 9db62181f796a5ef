"""Turning a conversation into each model's prompt tokens.

Styles (`--base-prompt`, `--guide-prompt`):
- ``plain``: the paper's form for the base, ``{system}\\nQuestion: {prompt}\\n`` (the system
  line is left out when there is none); earlier turns follow as ``Question: ...`` lines, each
  followed by its answer on the next line.
- ``chat``: the model's own chat template from the GGUF metadata (Jinja), with the generation
  prompt added; a template that already writes BOS is not given a second one.
- ``raw``: the prompt text exactly as given, no system prompt.
- any other string is a format with ``{prompt}`` and optionally ``{system}``, e.g.
  ``"{system}\\nQ: {prompt}\\nA:"``; earlier turns repeat it (system only in the first), each
  followed by its answer and a newline.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Protocol, Sequence

from .errors import BlendinError

PLAIN_FORMAT = "{system}\nQuestion: {prompt}\n"
BUILTIN_STYLES = ("plain", "chat", "raw")


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


class PromptModel(Protocol):
    name: str
    adds_bos: bool
    bos_id: int
    eos_id: int

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]: ...

    def token_bytes(self, token: int, special: bool = False) -> bytes: ...

    def metadata(self, key: str) -> str | None: ...


def check_style(style: str) -> str:
    if style in BUILTIN_STYLES:
        return style
    fields = {name for _, name, _, _ in string.Formatter().parse(style) if name is not None}
    if "prompt" not in fields:
        raise BlendinError(f"prompt format {style!r} needs a {{prompt}} placeholder (or use plain, chat or raw)")
    unknown = fields - {"prompt", "system"}
    if unknown:
        raise BlendinError(f"prompt format {style!r} has unknown placeholders: {', '.join(sorted(unknown))}")
    return style


def _split_system(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    if messages and messages[0].role == "system":
        return messages[0].content, list(messages[1:])
    return "", list(messages)


def render_format(fmt: str, messages: Sequence[Message]) -> str:
    system, turns = _split_system(messages)
    out: list[str] = []
    for message in turns:
        if message.role == "user":
            text = fmt.format(system=system, prompt=message.content)
            if fmt == PLAIN_FORMAT and not system:
                text = text.lstrip("\n")
            out.append(text)
            system = ""
        else:
            out.append(message.content + "\n")
    return "".join(out)


def render_raw(messages: Sequence[Message]) -> str:
    _, turns = _split_system(messages)
    return "".join(m.content for m in turns)


def render_chat(model: PromptModel, messages: Sequence[Message]) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata("tokenizer.chat_template")
    if not template:
        raise BlendinError(f"{model.name} has no chat template in its GGUF metadata; use a plain or custom prompt style")
    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_bytes(model.eos_id, special=True).decode("utf-8", "replace"),
        bos_token=model.token_bytes(model.bos_id, special=True).decode("utf-8", "replace"),
    )
    try:
        return formatter(messages=[{"role": m.role, "content": m.content} for m in messages]).prompt
    except Exception as e:  # the template is the model author's code: any error it raises is about its input
        raise BlendinError(f"{model.name}: its chat template failed on this conversation: {e}") from None


def prompt_tokens(model: PromptModel, messages: Sequence[Message], style: str) -> list[int]:
    if style == "chat":
        tokens = model.tokenize(render_chat(model, messages).encode("utf-8"), add_bos=False, special=True)
        if model.adds_bos and (not tokens or tokens[0] != model.bos_id):
            tokens.insert(0, model.bos_id)
        return tokens
    text = render_raw(messages) if style == "raw" else render_format(PLAIN_FORMAT if style == "plain" else style, messages)
    return model.tokenize(text.encode("utf-8"), add_bos=model.adds_bos, special=False)
