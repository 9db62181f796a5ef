"""The Python API: load a base and a guide once, then generate many times.

pair = BlendPair.load()                       # the default pair
result = pair.generate("How do I make tea?")  # BlendIn, greedy
for event in pair.stream("...", GenerationSettings(method="nudging")): ...
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blendin_local.backends.cpu_kernels import GATE, repack_setting
from blendin_local.backends.gguf_file import check_gguf_file
from blendin_local.backends.llama import LlamaModel, LoadOptions
from blendin_local.backends.registry import DEFAULT_PAIR, load_registry, models_dir, pair_entry, resolve_model
from blendin_local.backends.vocab_sources import VocabSource
from blendin_local.engine.bridge import VocabBridge, Vocabulary
from blendin_local.engine.generation import Finished, Generation, GenerationResult, StepEvent
from blendin_local.engine.messages import read_conversation
from blendin_local.engine.model import LanguageModel, ModelVocabulary
from blendin_local.engine.prompts import Message
from blendin_local.engine.settings import GenerationSettings
from blendin_local.errors import BlendinError
from blendin_local.user_paths import user_path

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
    base: str | os.PathLike[str] | None,
    guide: str | os.PathLike[str] | None,
    anti: str | os.PathLike[str] | None,
    options: LoadOptions | None = None,
    remote: RemoteSettings | None = None,
    pair: str | None = None,
) -> BlendPair:
    """A pair from model specs (registry names, user models, `ollama:`/`hf:`/`lmstudio:` specs or
    GGUF paths), missing ones from the named pair (`pair`, else the default pair), whose settings
    become the pair's defaults and whose context size is used when `options` is not given.
    With `remote`, the base or the guide (or both) runs on a server, its vocabulary read from
    --base-vocab/--guide-vocab, else from --base/--guide, else from the pair's model."""
    registry = load_registry()
    entry = pair_entry(pair or DEFAULT_PAIR, registry)
    base, guide, anti = (None if spec is None else os.fspath(spec) for spec in (base, guide, anti))
    options = options or (LoadOptions(n_ctx=entry.ctx_size) if entry.ctx_size else LoadOptions())
    base_name, guide_name = base or entry.base, guide or entry.guide
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
    loaded = assemble_pair(base_model, guide_model, anti_model, anti)
    loaded.defaults = GenerationSettings(**entry.settings)
    return loaded


def _remote_model(server: RemoteSpec, vocab: str, registry: Registry) -> LanguageModel:
    """A model on a server, its vocabulary from a file: a path (GGUF, tokenizer.json,
    tokenizer.model) or a registry name."""
    # Imported here: the HTTP client is loaded only by those who use a server.
    from blendin_local.backends.remote import RemoteModel
    from blendin_local.backends.vocab_sources import open_vocab

    path = user_path(vocab)
    return RemoteModel(server, open_vocab(path if path.exists() else resolve_model(vocab, registry)))


Conversation = str | Sequence[Message | Mapping[str, Any]]


def as_messages(prompt: Conversation, system: str | None) -> list[Message]:
    """A prompt string, or a conversation of Messages or OpenAI-style dicts (engine/messages.py),
    with the system prompt first unless the conversation has its own."""
    if isinstance(prompt, str):
        messages = [Message("user", prompt)]
    else:
        messages = read_conversation(prompt)
    if system and not (messages and messages[0].role == "system"):
        messages.insert(0, Message("system", system))
    if not any(m.role == "user" and m.content.strip() for m in messages):
        raise BlendinError("the prompt is empty")
    return messages


def settings_with(settings: GenerationSettings | None, overrides: Mapping[str, Any]) -> GenerationSettings:
    """`settings` (the defaults if None) with keyword overrides, checked as the CLI checks them:
    `pair.generate(prompt, max_tokens=64, method="nudging")`."""
    if not overrides:
        return settings or GenerationSettings()
    unknown = sorted(set(overrides) - set(GenerationSettings.model_fields))
    if unknown:
        raise BlendinError(f"unknown setting {unknown[0]!r} (settings: {', '.join(GenerationSettings.model_fields)})")
    values = settings.model_dump(exclude_unset=True) if settings is not None else {}
    return GenerationSettings.checked(**{**values, **overrides})


class InterleavedGeneration(BlendinError):
    """A generation stepped after another one started on the same pair, or from two threads at
    once: both models hold one KV cache each, which the newer generation has taken over."""


class GenerationTurns:
    """Which generation may use a pair's models: the one started last, one step at a time.

    Starting a generation supersedes the one before (a caller that broke out of a stream loop
    simply starts the next); stepping a superseded one is InterleavedGeneration, never wrong text.
    """

    def __init__(self) -> None:
        self._current: object | None = None
        self._busy = threading.Lock()

    def start(self, make: Callable[[], Generation]) -> Generation:
        with self._using_models():
            generation = make()
            self._current = generation
            return generation

    def step(self, generation: Generation, steps: Iterator[StepEvent]) -> Iterator[StepEvent]:
        """`steps`, each one taken only while `generation` is the pair's current one."""
        while True:
            with self._using_models():
                if self._current is not generation:
                    raise InterleavedGeneration(
                        "another generation started on this pair since this one began: finish one"
                        " before starting the next, or load one pair per concurrent generation"
                    )
                event = next(steps, None)
            if event is None:
                return
            yield event

    @contextmanager
    def _using_models(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise InterleavedGeneration(
                "this pair is generating in another thread: a pair runs one generation at a time;"
                " load one pair per thread"
            )
        try:
            yield
        finally:
            self._busy.release()


class PairGeneration(Generation):
    """A Generation that takes its steps in the pair's turn (GenerationTurns)."""

    def __init__(self, turns: GenerationTurns, *args: Any) -> None:
        super().__init__(*args)
        self._turns = turns

    def steps(self) -> Generator[StepEvent, None, None]:
        yield from self._turns.step(self, super().steps())


@dataclass
class BlendPair:
    """A loaded base and guide, bridged; one generation at a time (GenerationTurns).

    with BlendPair.load() as pair:
        pair.generate("How do I make tea?", max_tokens=64, method="nudging").text
    """

    base: LanguageModel
    guide: LanguageModel
    bridge: VocabBridge
    anti: LanguageModel | None = None
    turns: GenerationTurns = field(default_factory=GenerationTurns, repr=False, compare=False)
    defaults: GenerationSettings = field(default_factory=GenerationSettings)  # a named pair's own settings

    @classmethod
    def load(
        cls,
        base: str | os.PathLike[str] | None = None,
        guide: str | os.PathLike[str] | None = None,
        anti: str | os.PathLike[str] | None = None,
        options: LoadOptions | None = None,
        pair: str | None = None,
    ) -> BlendPair:
        """Models by registry name, source spec or GGUF path; missing ones come from the named
        pair (`blendin pair add`), else the default pair, whose settings become the defaults."""
        return load_pair(base, guide, anti, options, pair=pair)

    def start(self, prompt: Conversation, settings: GenerationSettings | None = None, **overrides: Any) -> Generation:
        """A generation to iterate (StepEvents, then Finished) or `run()`. Keyword settings
        override `settings`' fields."""
        chosen = settings_with(settings or self.defaults, overrides)
        messages = as_messages(prompt, chosen.system)
        return self.turns.start(lambda: PairGeneration(self.turns, self, messages, chosen))

    def stream(
        self, prompt: Conversation, settings: GenerationSettings | None = None, **overrides: Any
    ) -> Iterator[StepEvent | Finished]:
        """One StepEvent per token, then Finished with the result."""
        return iter(self.start(prompt, settings, **overrides))

    def generate(
        self, prompt: Conversation, settings: GenerationSettings | None = None, **overrides: Any
    ) -> GenerationResult:
        return self.start(prompt, settings, **overrides).run()

    def close(self) -> None:
        for model in (self.base, self.guide, self.anti):
            if model is not None:
                model.close()

    def __enter__(self) -> BlendPair:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
