"""The Python API: load a base and a guide once, then generate many times.

pair = BlendPair.load()                       # the default pair
result = pair.generate("How do I make tea?")  # BlendIn, greedy
for event in pair.stream("...", GenerationSettings(method="nudging")): ...
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from blendin_local.backends.cpu_kernels import GATE, repack_setting
from blendin_local.backends.gguf_file import check_gguf_file
from blendin_local.backends.llama import LlamaModel, LoadOptions
from blendin_local.backends.registry import DEFAULT_PAIR, load_registry, models_dir, resolve_model, resolve_pair
from blendin_local.backends.vocab_sources import VocabSource
from blendin_local.engine.bridge import VocabBridge, Vocabulary
from blendin_local.engine.generation import Finished, Generation, GenerationResult, StepEvent
from blendin_local.engine.model import LanguageModel, ModelVocabulary
from blendin_local.engine.prompts import Message
from blendin_local.engine.settings import GenerationSettings
from blendin_local.errors import BlendinError

if TYPE_CHECKING:
    from blendin_local.backends.registry import Registry
    from blendin_local.backends.remote import RemoteSettings, RemoteSpec


def check_kernels(options: LoadOptions, paths: Sequence[Path]) -> None:
    """Settle whether llama.cpp's extra CPU buffers run here before any model loads, probing with
    the smallest of the pair's (checked) files: a guide loads faster than its base."""
    if not options.vocab_only:
        GATE.allows_extra_buffers(repack_setting(options.repack), paths)


def vocabulary(model: ModelVocabulary) -> Vocabulary:
    return Vocabulary(pieces=tuple(model.pieces), eog_ids=model.eog_ids, eos_id=model.eos_id)


def load_bridge(base: ModelVocabulary, guide: ModelVocabulary) -> VocabBridge:
    """The bridge between two vocabularies, from the cache on disk when it has been built before."""
    return VocabBridge.build(
        vocabulary(base),
        vocabulary(guide),
        base_tokenize=base.tokenize,
        guide_tokenize=guide.tokenize,
        cache_dir=models_dir() / "bridges",
    )


# Bridges already built in this process, by both vocabularies' identity: building one indexes
# every piece of both vocabularies, and `eval --jobs N` loads the same pair N times.
_bridges: dict[tuple[str, str], VocabBridge] = {}
_bridges_lock = threading.Lock()


def _vocabulary_key(model: LanguageModel) -> str | None:
    """What a model's vocabulary is read from (None: unknown, its bridge is not shared)."""
    vocab = getattr(model, "vocab", None)  # a model on a server reads its vocabulary from a VocabSource
    if isinstance(vocab, VocabSource):
        return vocab.cache_key
    if isinstance(model, LlamaModel):
        return f"gguf:{model.path.resolve()}"
    return None


def shared_bridge(base: LanguageModel, guide: LanguageModel) -> VocabBridge:
    base_key, guide_key = _vocabulary_key(base), _vocabulary_key(guide)
    if base_key is None or guide_key is None:
        return load_bridge(base, guide)
    with _bridges_lock:
        if (base_key, guide_key) not in _bridges:
            _bridges[base_key, guide_key] = load_bridge(base, guide)
        return _bridges[base_key, guide_key]


def assemble_pair(
    base: LanguageModel, guide: LanguageModel, anti: LanguageModel | None = None, anti_name: str | None = None
) -> BlendPair:
    """A BlendPair of loaded models, local or remote, bridged through the one bridge cache."""
    if anti is not None and list(anti.pieces) != list(guide.pieces):
        raise BlendinError(
            f"--anti {anti_name or anti.name} must share the guide's vocabulary ({guide.name}), and it does not"
        )
    return BlendPair(base, guide, shared_bridge(base, guide), anti)


def load_pair(
    base: str | None,
    guide: str | None,
    anti: str | None,
    options: LoadOptions = LoadOptions(),
    remote: RemoteSettings | None = None,
) -> BlendPair:
    """A pair from model specs: registry names or GGUF paths, missing ones from the default pair.
    With `remote`, the base or the guide (or both) runs on a server, its vocabulary read from
    --base-vocab/--guide-vocab, else from --base/--guide, else from the default pair's model."""
    registry = load_registry()
    default_base, default_guide = resolve_pair(DEFAULT_PAIR, registry)
    base_name, guide_name = base or default_base, guide or default_guide
    base_server = remote.server("base", options.n_ctx) if remote is not None else None
    guide_server = remote.server("guide", options.n_ctx) if remote is not None else None
    base_path = resolve_model(base_name, registry) if base_server is None else None
    guide_path = resolve_model(guide_name, registry) if guide_server is None else None
    anti_path = resolve_model(anti, registry) if anti is not None else None
    local_paths = [p for p in (base_path, guide_path, anti_path) if p is not None]
    for path in local_paths:
        check_gguf_file(path)  # every file before any load: a bad guide fails before the base loads
    check_kernels(options, local_paths)

    def load(path: Path | None, server: RemoteSpec | None, vocab: str | None, name: str) -> LanguageModel:
        if server is None:
            assert path is not None  # resolved above for every model that runs here
            return LlamaModel(path, options)
        return _remote_model(server, vocab or name, registry)

    base_model = load(base_path, base_server, remote.base_vocab if remote is not None else None, base_name)
    guide_model = load(guide_path, guide_server, remote.guide_vocab if remote is not None else None, guide_name)
    anti_model = LlamaModel(anti_path, options) if anti_path is not None else None
    return assemble_pair(base_model, guide_model, anti_model, anti)


def _remote_model(server: RemoteSpec, vocab: str, registry: Registry) -> LanguageModel:
    """A model on a server, its vocabulary from a file: a path (GGUF, tokenizer.json,
    tokenizer.model) or a registry name."""
    # Imported here: the HTTP client is loaded only by those who use a server.
    from blendin_local.backends.remote import RemoteModel
    from blendin_local.backends.vocab_sources import open_vocab

    path = Path(vocab).expanduser()
    return RemoteModel(server, open_vocab(path if path.exists() else resolve_model(vocab, registry)))


def as_messages(prompt: str | Sequence[Message], system: str | None) -> list[Message]:
    if isinstance(prompt, str):
        messages = [Message("user", prompt)]
    else:
        messages = list(prompt)
    if system and not (messages and messages[0].role == "system"):
        messages.insert(0, Message("system", system))
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise BlendinError("the prompt is empty")
    return messages


@dataclass
class BlendPair:
    base: LanguageModel
    guide: LanguageModel
    bridge: VocabBridge
    anti: LanguageModel | None = None

    @classmethod
    def load(
        cls,
        base: str | None = None,
        guide: str | None = None,
        anti: str | None = None,
        options: LoadOptions = LoadOptions(),
    ) -> BlendPair:
        """Models by registry name or GGUF path; missing names come from the default pair."""
        return load_pair(base, guide, anti, options)

    def start(self, prompt: str | Sequence[Message], settings: GenerationSettings | None = None) -> Generation:
        settings = settings or GenerationSettings()
        return Generation(self, as_messages(prompt, settings.system), settings)

    def stream(
        self, prompt: str | Sequence[Message], settings: GenerationSettings | None = None
    ) -> Iterator[StepEvent | Finished]:
        """One StepEvent per token, then Finished with the result."""
        return iter(self.start(prompt, settings))

    def generate(self, prompt: str | Sequence[Message], settings: GenerationSettings | None = None) -> GenerationResult:
        return self.start(prompt, settings).run()

    def close(self) -> None:
        for model in (self.base, self.guide, self.anti):
            if model is not None:
                model.close()
