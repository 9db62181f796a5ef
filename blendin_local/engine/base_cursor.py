"""The base model's view of the response: its own tokens, plus bytes others wrote (Nudging's
guide words) that it tokenizes itself before its next step; and rows evaluated ahead of time
(speculation.py), which serve its next steps while the text follows them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from blendin_local.engine.blending import softmax
from blendin_local.engine.bridge import VocabBridge
from blendin_local.engine.byte_tokens import tokens_for_bytes

if TYPE_CHECKING:
    from blendin_local.engine.distributions import FloatArray, IdArray
    from blendin_local.engine.model import LanguageModel


def silent_controls(model: LanguageModel) -> IdArray:
    """Control tokens that do not end generation (Gemma's <start_of_image>, say): they write no
    text, so no method ever chooses them."""
    return np.fromiter(sorted(model.control_ids - model.eog_ids), dtype=np.int64)


class BaseCursor:
    def __init__(self, model: LanguageModel, bridge: VocabBridge, prompt: Sequence[int]):
        self.model, self.bridge = model, bridge
        self.tokens = list(prompt)
        self.pending = b""
        self.blocked = silent_controls(model)
        self._ahead: tuple[list[int], int, FloatArray] | None = None  # (tokens, where its rows start, rows)

    def push_token(self, token: int) -> None:
        self._settle()
        self.tokens.append(token)

    def push_bytes(self, data: bytes) -> None:
        self.pending += data

    def probs(self) -> FloatArray:
        self._settle()
        row = self._row_ahead()
        p = softmax(self.model.logits(self.tokens)[0] if row is None else row)
        p[self.blocked] = 0.0
        return p

    def evaluate_ahead(self, draft: Sequence[int]) -> None:
        """Evaluate the text plus `draft` in one batch, keeping the logits after the text and after
        each draft token: while the text goes on as the draft does, the next steps read these rows
        instead of evaluating one token each. The model's cache then holds the draft too; its next
        evaluation of other tokens drops the part that was not taken (the backends keep the
        longest common prefix)."""
        self._settle()
        ahead = self.tokens + list(draft)
        self._ahead = (ahead, len(self.tokens), self.model.logits(ahead, n_last=len(draft) + 1))

    def reads_ahead(self) -> bool:
        """Whether the next step's distribution was evaluated ahead (the text follows the draft)."""
        self._settle()
        return self._row_ahead() is not None

    def _row_ahead(self) -> FloatArray | None:
        if self._ahead is None:
            return None
        ahead, start, rows = self._ahead
        n = len(self.tokens)
        if start <= n <= start + len(rows) - 1 and self.tokens == ahead[:n]:
            row: FloatArray = rows[n - start]
            return row
        self._ahead = None  # the text left the draft: its rows serve no later step either
        return None

    def _settle(self) -> None:
        if self.pending:
            b = self.bridge
            self.tokens += tokens_for_bytes(self.model.tokenize, b.base.pieces, b.base_prefix, self.pending)
            self.pending = b""
