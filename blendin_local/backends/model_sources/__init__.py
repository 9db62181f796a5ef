"""GGUF files other tools keep on disk, named by a prefixed spec (docs/model_sources.md).

    ollama:NAME[:TAG], ollama:NAMESPACE/NAME[:TAG], ollama:HOST/NAMESPACE/NAME[:TAG]
    hf:ORG/REPO[:QUANT], hf:ORG/REPO/FILE.gguf           (the Hugging Face hub cache)
    lmstudio:PUBLISHER/REPO[:QUANT], lmstudio:PUBLISHER/REPO/FILE.gguf
    llm:ID, llm:gguf/ID, llm:ALIAS                       (a model llm-gguf registered)
    llamacpp:USER/MODEL[:TAG], llamacpp:USER/MODEL/FILE.gguf, llamacpp:FILE.gguf
                                                         (llama.cpp's -hf downloads)
    models:NAME                                          (blendin's own models folder)

Pure filesystem code: nothing here loads a model or touches the network. Every folder, manifest,
ref and link is hostile input. A spec is bounded and its parts checked against the character
rules of the tool that made the name, so no part can be `..` or hold a separator; a manifest is
read only if small, and its digest must be `sha256:` and 64 hex digits; the path returned is
built inside the source's folder (what a symlink there points to is the tool's business, as
Hugging Face's snapshots are links into its blobs), and must be a regular file. The exception is
llm-gguf, whose index names files wherever its user registered them: those paths must be
absolute and regular files. Anything wrong is one BlendinError line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from blendin_local.backends.model_sources import hugging_face, llamacpp, llm, lmstudio, ollama, own_folder
from blendin_local.backends.model_sources.folders import shown
from blendin_local.errors import BlendinError

MAX_SPEC = 512
# What a spec may contain at all; each source then checks its own parts.
_SPEC_CHARS = re.compile(r"[A-Za-z0-9._:/+-]+")

# Each source: the file a spec names (without its prefix), given blendin's models folder.
SOURCES: dict[str, Callable[[str, Path], Path]] = {
    "models": own_folder.resolve,
    "ollama": ollama.resolve,
    "hf": hugging_face.resolve,
    "lmstudio": lmstudio.resolve,
    "llm": llm.resolve,
    "llamacpp": llamacpp.resolve,
}


@dataclass(frozen=True)
class FoundModel:
    """A GGUF file found in a source, and the spec that names it."""

    source: str  # "models", "ollama", "hf", "lmstudio", "llm" or "llamacpp"
    spec: str
    path: Path


def source_of(spec: str) -> str | None:
    """The source a spec names by its prefix (`ollama:...` is "ollama"), or None for a plain name."""
    prefix, colon, _ = spec.partition(":")
    return prefix if colon and prefix in SOURCES else None


def resolve(spec: str, models_folder: Path) -> Path:
    """The GGUF file a prefixed spec names; one-line BlendinError if there is none or several."""
    source = source_of(spec)
    if source is None:
        raise BlendinError(f"'{shown(spec)}' names no model source (known: {', '.join(f'{s}:' for s in SOURCES)})")
    rest = _checked_spec(spec)[len(source) + 1 :]
    try:
        return SOURCES[source](rest, models_folder)
    except OSError as e:  # a folder this user may not read, a name longer than the filesystem takes
        raise BlendinError(f"{shown(spec)}: {e.strerror or e}") from None


def discover(models_folder: Path) -> list[FoundModel]:
    """Every GGUF file in the models folder, Ollama, the Hugging Face cache, LM Studio, llm and
    llama.cpp's cache, each with the shortest spec that resolves back to it (its path where none
    does)."""
    found = []
    for source, files in (  # generators: each reads its folders as it is iterated, in the try
        ("models", own_folder.files(models_folder)),
        ("ollama", ollama.files()),
        ("hf", hugging_face.files()),
        ("lmstudio", lmstudio.files()),
        ("llm", llm.files()),
        ("llamacpp", llamacpp.files()),
    ):
        try:
            for specs, path in files:
                found.append(FoundModel(source, _first_naming(specs, path, models_folder), path))
        except OSError:
            continue  # a folder this user may not read: the rest of that source is not listed
    return found


def _first_naming(specs: list[str], path: Path, models_folder: Path) -> str:
    for spec in specs:
        try:
            if resolve(spec, models_folder) == path:
                return spec
        except BlendinError:
            continue
    return str(path)


def _checked_spec(spec: str) -> str:
    if len(spec) > MAX_SPEC:
        raise BlendinError(f"model spec '{shown(spec)}' is {len(spec)} characters long (at most {MAX_SPEC})")
    if not _SPEC_CHARS.fullmatch(spec):
        raise BlendinError(f"model spec '{shown(spec)}' has characters other than letters, digits and . _ - + : /")
    return spec
