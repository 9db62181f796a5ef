"""The base model's view of the response: its own tokens, plus bytes others wrote (Nudging's
guide words) that it tokenizes itself before its next step."""

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

    def push_token(self, token: int) -> None:
        self._settle()
        self.tokens.append(token)

    def push_bytes(self, data: bytes) -> None:
        self.pending += data

    def probs(self) -> FloatArray:
        self._settle()
        p = softmax(self.model.logits(self.tokens)[0])
        p[self.blocked] = 0.0
        return p

    def _settle(self) -> None:
        if self.pending:
            b = self.bridge
            self.tokens += tokens_for_bytes(self.model.tokenize, b.base.pieces, b.base_prefix, self.pending)
            self.pending = b""
