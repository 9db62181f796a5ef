"""A tiny deterministic LanguageModel (engine/model.py), for unit tests of the
cursors and the loop: its vocabulary is a list of byte pieces, its tokenizer is greedy
longest-match, and its next-token preferences are a rule over the pieces it has been fed.
ScriptedPair puts two of them together as a pair (engine/model.py's ModelPair)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from blendin_local.engine.bridge import PrefixFinder, VocabBridge, Vocabulary
from blendin_local.engine.byte_tokens import greedy_tokens

EOS = b"<eos>"


class ScriptedModel:
    def __init__(self, name: str, pieces: Sequence[bytes], rule: Callable[[tuple[bytes, ...]], dict[bytes, float]]):
        self.name = name
        self.pieces = [b"" if p == EOS else p for p in pieces]
        self.eos_id = list(pieces).index(EOS)
        self.bos_id = self.eos_id
        self.eog_ids = frozenset({self.eos_id})
        self.control_ids = frozenset({self.eos_id})
        self.adds_bos = False
        self.n_vocab = len(pieces)
        self.n_ctx = 512
        self.rule = rule
        self.evaluated: list[list[int]] = []  # every token sequence asked for, for assertions
        self._index = {p: i for i, p in enumerate(self.pieces) if p}
        self._finder = PrefixFinder(self._index)

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]:
        return greedy_tokens(self.pieces, self._finder, text)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        return EOS if special and token == self.eos_id else self.pieces[token]

    def metadata(self, key: str) -> str | None:
        return None

    def begin_request(self, prompt: Sequence[int]) -> None:
        pass

    def close(self) -> None:
        pass

    def logits(self, tokens: Sequence[int], n_last: int = 1) -> np.ndarray:
        self.evaluated.append(list(tokens))
        rows = []
        for end in range(len(tokens) - n_last + 1, len(tokens) + 1):
            row = np.full(self.n_vocab, -20.0, dtype=np.float32)
            for piece, logit in self.rule(
                tuple(self.pieces[t] if t != self.eos_id else EOS for t in tokens[:end])
            ).items():
                row[self.eos_id if piece == EOS else self._index[piece]] = logit
            rows.append(row)
        return np.stack(rows)


class ScriptedPair:
    """Two scripted models and the bridge between their vocabularies, with no anti-model."""

    def __init__(self, base: ScriptedModel, guide: ScriptedModel):
        self.base, self.guide, self.anti = base, guide, None
        self.bridge = VocabBridge.build(
            _vocabulary(base), _vocabulary(guide), base_tokenize=base.tokenize, guide_tokenize=guide.tokenize
        )


def _vocabulary(model: ScriptedModel) -> Vocabulary:
    return Vocabulary(tuple(model.pieces), model.eog_ids, model.eos_id)
