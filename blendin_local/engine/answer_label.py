"""The answer label a pre-trained base writes before its answer, kept out of the answer.

Given the paper's plain prompt (``Question: ...\\n``), a pre-trained base starts by labelling its
answer itself: Gemma 3 270M wrote ``Answer:`` first on 26 of 27 varied prompts. The label is not
part of the answer. The guide continues the same response inside its chat template, where the
label reads as the start of its own reply, and it answered with more labels (``\\n\\nA:``); the
user does not want it either. So the base's first tokens are read greedily before the first
step, and the base rolled back; if they are a label they join the base's prompt when generation
starts (its cache already holds them, at no cost). Every method that runs the base does this, so
the base alone and a blend with alpha 0 still write the same text.

After a label (the base's own, or the one the few-shot prompt ends with) the answer starts with
whitespace: the base writes `` The``. That whitespace is dropped from the answer's text, and the
guide, whose reply starts right after its template's assistant header, is not shown it either
where the base alone wrote it. Where the guide was consulted, it sees the text as it is: the
whitespace may be its own choice, and hiding that would ask it the same question again.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from blendin_local.engine.base_cursor import BaseCursor
from blendin_local.engine.guide_cursor import GuideCursor
from blendin_local.engine.model import ContextFull
from blendin_local.engine.text_stream import TextStream

ANSWER_LABELS = (b"Answer:", b"A:", b"Response:")
MAX_LABEL_TOKENS = 6  # leading line breaks and the label; Gemma 3 writes "Answer:" in two tokens
# Base prompt styles after which an answer follows a label: the paper's plain form (the base
# writes the label itself) and the few-shot prompt (which ends with one).
STYLES_WITH_LABEL = ("plain", "fewshot")
STYLES_WHERE_THE_BASE_WRITES_THE_LABEL = ("plain",)


def is_answer_label(text: bytes) -> bool:
    """Whether `text` is exactly an answer label, after optional whitespace ("A cup" is not)."""
    return text.lstrip() in ANSWER_LABELS


def may_become_answer_label(text: bytes) -> bool:
    """Whether more text could still make `text` an answer label."""
    start = text.lstrip()
    return any(label.startswith(start) for label in ANSWER_LABELS)


def read_answer_label(base: BaseCursor) -> list[int]:
    """The tokens of the answer label the base writes first, greedily ([] if it writes none); the
    base is left as it was."""
    saved = list(base.tokens)
    written = b""
    label: list[int] = []
    try:
        for _ in range(MAX_LABEL_TOKENS):
            token = int(np.argmax(base.probs()))
            if token in base.model.eog_ids:
                break
            written += base.model.pieces[token]
            base.push_token(token)
            if is_answer_label(written) and len(base.tokens) < base.model.n_ctx:  # room for an answer
                label = base.tokens[len(saved) :]
                break
            if not may_become_answer_label(written):
                break
    except ContextFull:
        pass  # no room to read a label: the loop reports the full context
    base.tokens = saved
    return label


class PendingLabel:
    """An answer label read before the first step. It joins the base's prompt when generation
    starts, and only then: text forced through the loop to be scored (likelihood.py) brings its
    own label. Cursors that read the base's prompt form (`readers`) read it too."""

    def __init__(self, tokens: list[int], readers: Sequence[GuideCursor]):
        self.tokens, self.readers = tokens, readers

    def take(self, base: BaseCursor) -> None:
        for token in self.tokens:
            base.push_token(token)
            for cursor in self.readers:
                cursor.commit(base.model.pieces[token])
        self.tokens = []


class LeadingWhitespace:
    """The answer's leading whitespace, kept from the guide's view while only the base wrote it."""

    def __init__(self, hidden: bool):
        self.hidden = hidden  # the answer has not started yet for the guide

    def guide_view(self, piece: bytes, guide_consulted: bool) -> bytes:
        """What the guide is shown of a committed piece: all of it once its reply has started or
        when it took part in choosing it; else the piece without leading whitespace (maybe b"")."""
        if not self.hidden or guide_consulted:
            self.hidden = False
            return piece
        shown = piece.lstrip()
        self.hidden = not shown
        return shown


class AnswerText(TextStream):
    """A TextStream whose text starts at the answer's first byte that is not whitespace."""

    def __init__(self, stops: Sequence[str] = ()):
        super().__init__(stops)
        self.started = False

    def feed(self, data: bytes) -> str:
        if not self.started:
            data = data.lstrip()
            self.started = bool(data)
        return super().feed(data)
