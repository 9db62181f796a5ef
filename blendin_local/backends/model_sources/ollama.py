"""Ollama's models folder: a manifest per model and tag, naming the model blob by its digest.
Named ollama:NAME[:TAG], ollama:NAMESPACE/NAME[:TAG] or ollama:HOST/NAMESPACE/NAME[:TAG]."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from blendin_local.backends.model_sources.folders import (
    MAX_MANIFEST_BYTES,
    candidates,
    entries,
    read_small,
    regular_file,
    shown,
    subfolders,
)
from blendin_local.errors import BlendinError
from blendin_local.user_paths import user_path

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"

# Ollama's name parts (types/model/name.go, isValidPart): an alphanumeric or _ first, then these.
_PART = {
    "host": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}"),
    "namespace": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}"),
    "model": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
    "tag": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}"),
}
# Ollama's blob names (manifest/paths.go, BlobsPath): only a sha256 digest, so none can leave blobs/.
_DIGEST = re.compile(r"sha256[:-]([0-9a-fA-F]{64})")


def models_dir() -> Path:
    """$OLLAMA_MODELS, else ~/.ollama/models (envconfig/config.go, Models). Ollama's Linux
    service keeps its own under /usr/share/ollama/.ollama/models: point OLLAMA_MODELS there."""
    return user_path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


@dataclass(frozen=True)
class OllamaName:
    host: str
    namespace: str
    model: str
    tag: str

    def spec(self) -> str:
        """The shortest spec, as Ollama shows a name (DisplayShortest): defaults left out."""
        if self.host != DEFAULT_HOST:
            return f"ollama:{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace != DEFAULT_NAMESPACE:
            return f"ollama:{self.namespace}/{self.model}:{self.tag}"
        return f"ollama:{self.model}:{self.tag}"


def parse_name(text: str) -> OllamaName:
    """[HOST/][NAMESPACE/]MODEL[:TAG], read as Ollama reads it (ParseNameBare): the tag is what
    follows the last ':' after the last '/', so a host may carry a port."""
    path, tag = text, DEFAULT_TAG
    if text.rfind(":") > text.rfind("/"):
        path, _, tag = text.rpartition(":")
    parts = path.split("/")
    if len(parts) > 3:
        raise BlendinError(f"ollama:{shown(text)}: a name is [HOST/][NAMESPACE/]MODEL[:TAG]")
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace, model = parts
    elif len(parts) == 2:
        namespace, model = parts
    else:
        (model,) = parts
    name = OllamaName(host, namespace, model, tag)
    for kind, pattern in _PART.items():
        if not pattern.fullmatch(getattr(name, kind)):
            raise BlendinError(f"ollama:{shown(text)}: '{shown(getattr(name, kind))}' is not a valid Ollama {kind}")
    return name


def resolve(text: str, models_folder: Path) -> Path:
    return model_blob(parse_name(text), models_dir())


def model_blob(name: OllamaName, root: Path) -> Path:
    """The GGUF blob of an Ollama model: its manifest's one layer of the model media type."""
    what = name.spec()
    model_folder = root / "manifests" / name.host / name.namespace / name.model
    manifest = model_folder / name.tag
    if not manifest.exists() and not manifest.is_symlink():
        if model_folder.is_dir():
            tags = [f"{name.model}:{t}" for t in sorted(e.name for e in entries(model_folder))]
            raise BlendinError(f"{what}: no such tag in {shown(str(root), 300)} (tags: {candidates(tags)})")
        raise BlendinError(f"{what}: no manifest for this model in {shown(str(root), 300)} (set OLLAMA_MODELS?)")
    layers = _manifest_layers(read_small(manifest, MAX_MANIFEST_BYTES, what), what)
    models = [layer for layer in layers if layer.get("mediaType") == MODEL_MEDIA_TYPE]
    if len(models) != 1:
        types = sorted({t for layer in layers if isinstance(t := layer.get("mediaType"), str)})
        count = "no layer" if not models else f"{len(models)} layers"
        raise BlendinError(
            f"{what}: the manifest has {count} of type {MODEL_MEDIA_TYPE} (its layers: {candidates(types)})"
        )
    digest, size = models[0].get("digest"), models[0].get("size")
    match = _DIGEST.fullmatch(digest) if isinstance(digest, str) else None
    if match is None:
        raise BlendinError(f"{what}: the model layer's digest is not sha256:<64 hex digits>")
    blob = regular_file(root / "blobs" / f"sha256-{match.group(1)}", what)
    if isinstance(size, int) and not isinstance(size, bool) and blob.stat().st_size != size:
        raise BlendinError(
            f"{what}: {blob} is {blob.stat().st_size} bytes, the manifest says {size} (an unfinished pull?)"
        )
    return blob


def _manifest_layers(data: bytes, what: str) -> list[dict]:
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise BlendinError(f"{what}: the manifest is not JSON") from None
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise BlendinError(f"{what}: the manifest has no list of layers")
    return layers


def files() -> Iterator[tuple[list[str], Path]]:
    """Every model with a manifest, found as Ollama finds them (manifests/*/*/*/*)."""
    root = models_dir()
    manifests = root / "manifests"
    for host in subfolders(manifests):
        for namespace in subfolders(manifests / host):
            for model in subfolders(manifests / host / namespace):
                for tag in entries(manifests / host / namespace / model):
                    try:
                        name = parse_name(f"{host}/{namespace}/{model}:{tag.name}")
                        yield [name.spec()], model_blob(name, root)
                    except BlendinError:
                        continue  # `blendin models path` with its spec says what is wrong
