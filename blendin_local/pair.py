"""The Python API: load a base and a guide once, then generate many times.

    pair = BlendPair.load()                       # the default pair
    result = pair.generate("How do I make tea?")  # BlendIn, greedy
    for event in pair.stream("...", GenerationSettings(method="nudging")): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from blendin_local.engine.bridge import Vocabulary, VocabBridge
from blendin_local.backends.cpu_kernels import GATE, repack_setting
from blendin_local.errors import BlendinError
from blendin_local.backends.gguf_file import check_gguf_file
from blendin_local.engine.generation import Finished, Generation, GenerationResult, GenerationSettings
from blendin_local.backends.llama import LlamaModel, LoadOptions
from blendin_local.backends.registry import DEFAULT_PAIR, load_registry, models_dir, resolve_model, resolve_pair
from blendin_local.engine.prompts import Message


def check_kernels(options: LoadOptions, paths: Sequence[Path]) -> None:
    """Settle whether llama.cpp's extra CPU buffers run here before any model loads, probing with
    the smallest of the pair's (checked) files: a guide loads faster than its base."""
    if not options.vocab_only:
        GATE.allows_extra_buffers(repack_setting(options.repack), paths)


def vocabulary(model: LlamaModel) -> Vocabulary:
    return Vocabulary(pieces=tuple(model.pieces), eog_ids=model.eog_ids, eos_id=model.eos_id)


def load_bridge(base: LlamaModel, guide: LlamaModel) -> VocabBridge:
    return VocabBridge.build(vocabulary(base), vocabulary(guide),
                             base_tokenize=base.tokenize, guide_tokenize=guide.tokenize,
                             cache_dir=models_dir() / "bridges")


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
    base: LlamaModel
    guide: LlamaModel
    bridge: VocabBridge
    anti: LlamaModel | None = None

    @classmethod
    def load(cls, base: str | None = None, guide: str | None = None, anti: str | None = None,
             options: LoadOptions = LoadOptions()) -> "BlendPair":
        """Models by registry name or GGUF path; missing names come from the default pair."""
        registry = load_registry()
        default_base, default_guide = resolve_pair(DEFAULT_PAIR, registry)
        base_path = resolve_model(base or default_base, registry)
        guide_path = resolve_model(guide or default_guide, registry)
        anti_path = resolve_model(anti, registry) if anti is not None else None
        paths = [p for p in (base_path, guide_path, anti_path) if p is not None]
        for path in paths:
            check_gguf_file(path)  # every file before any load: a bad guide fails before the base loads
        check_kernels(options, paths)
        base_model = LlamaModel(base_path, options)
        guide_model = LlamaModel(guide_path, options)
        anti_model = None
        if anti_path is not None:
            anti_model = LlamaModel(anti_path, options)
            if anti_model.pieces != guide_model.pieces:
                raise BlendinError(f"--anti {anti} must share the guide's vocabulary ({guide_model.name}), and it does not")
        return cls(base_model, guide_model, load_bridge(base_model, guide_model), anti_model)

    def start(self, prompt: str | Sequence[Message], settings: GenerationSettings | None = None) -> Generation:
        settings = settings or GenerationSettings()
        return Generation(self, as_messages(prompt, settings.system), settings)

    def stream(self, prompt: str | Sequence[Message], settings: GenerationSettings | None = None):
        return iter(self.start(prompt, settings))

    def generate(self, prompt: str | Sequence[Message], settings: GenerationSettings | None = None) -> GenerationResult:
        for event in self.stream(prompt, settings):
            if isinstance(event, Finished):
                return event.result
        raise AssertionError("a generation always finishes")

    def close(self) -> None:
        for model in (self.base, self.guide, self.anti):
            if model is not None:
                model.close()
