"""What the engine needs from a model, whatever runs it (llama.cpp in-process, a server, a test
script): the vocabulary side (pieces, special ids, tokenizer, chat template) and the evaluation
side (next-token logits of a token sequence). Backends implement these protocols; the engine
imports no backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from blendin_local.errors import BlendinError

if TYPE_CHECKING:
    from blendin_local.engine.bridge import VocabBridge
    from blendin_local.engine.distributions import FloatArray


class ContextFull(BlendinError):
    """A token sequence longer than a model's context: generation ends there (stop_reason "context")."""

    def __init__(self, needed: int, n_ctx: int):
        super().__init__(f"{needed} tokens do not fit in the context of {n_ctx} tokens")
        self.needed, self.n_ctx = needed, n_ctx


@runtime_checkable
class ModelVocabulary(Protocol):
    """A model's vocabulary without its weights: what the bridge and a server's answers are read with."""

    @property
    def name(self) -> str: ...

    @property
    def n_vocab(self) -> int: ...

    @property
    def pieces(self) -> Sequence[bytes]:
        """The raw bytes of every token; control tokens are empty."""

    @property
    def eog_ids(self) -> frozenset[int]: ...

    @property
    def control_ids(self) -> frozenset[int]: ...

    @property
    def bos_id(self) -> int: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def adds_bos(self) -> bool: ...

    def tokenize(self, text: bytes, *, add_bos: bool = False, special: bool = False) -> list[int]:
        """Tokens of `text`, which must be complete UTF-8."""

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token; control tokens are empty unless `special`."""

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value (the chat template: "tokenizer.chat_template"), None if absent."""


@runtime_checkable
class LanguageModel(ModelVocabulary, Protocol):
    """A model the engine generates with: its vocabulary, its context and its next-token logits."""

    @property
    def n_ctx(self) -> int: ...

    def begin_request(self, prompt: Sequence[int]) -> None:
        """A new request starts with this prompt (a local model decides what its cache keeps)."""

    def logits(self, tokens: Sequence[int], n_last: int = 1) -> FloatArray:
        """Logits (shape n_last x n_vocab) after each of the last `n_last` tokens; raises
        ContextFull when `tokens` do not fit. The rows may be read-only."""

    def close(self) -> None: ...


class ModelPair(Protocol):
    """A base and a guide (and for proxy tuning the guide's untuned counterpart), bridged."""

    @property
    def base(self) -> LanguageModel: ...

    @property
    def guide(self) -> LanguageModel: ...

    @property
    def bridge(self) -> VocabBridge: ...

    @property
    def anti(self) -> LanguageModel | None: ...
