"""Every kind of model satisfies the engine's protocols (engine/model.py). The annotated
assignments are what mypy checks (`mypy tests/engine/test_model_protocol.py`, with tests/ on its path); the tests check the
same at run time for the models that load without llama.cpp weights or a server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scripted_model import EOS, ScriptedModel

from blendin_local.backends.vocab_sources import VocabSource
from blendin_local.engine.model import LanguageModel, ModelVocabulary

if TYPE_CHECKING:
    from blendin_local.backends.llama import LlamaModel
    from blendin_local.backends.remote import RemoteModel

    def _static_checks(local: LlamaModel, remote: RemoteModel, scripted: ScriptedModel, vocab: VocabSource) -> None:
        models: list[LanguageModel] = [local, remote, scripted]
        vocabularies: list[ModelVocabulary] = [local, remote, scripted, vocab]
        del models, vocabularies


def test_a_scripted_model_is_a_language_model():
    model = ScriptedModel("scripted", [b"a", b"b", EOS], lambda seen: {b"a": 1.0})
    assert isinstance(model, LanguageModel)


def test_a_vocabulary_source_is_a_model_vocabulary_not_a_model():
    class Pieces(VocabSource):
        kind = "test"

        def __init__(self):
            self.name, self.n_vocab, self.pieces = "pieces", 2, [b"a", b"b"]
            self.eog_ids, self.control_ids = frozenset(), frozenset()
            self.bos_id, self.eos_id, self.adds_bos = 0, 1, False

    assert isinstance(Pieces(), ModelVocabulary)
    assert not isinstance(Pieces(), LanguageModel)  # no context, no logits: it only stands in for a vocabulary
