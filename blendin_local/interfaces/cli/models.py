"""`blendin models`: the model registry, GGUF files, and the vocabulary bridge between two models."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from blendin_local.backends import model_sources
from blendin_local.backends import registry as model_registry
from blendin_local.backends.gguf_file import check_gguf_header, display_name
from blendin_local.backends.llama import LlamaModel, LoadOptions
from blendin_local.errors import BlendinError
from blendin_local.pair import load_bridge


@click.group()
def models():
    """The model registry and GGUF files."""


@models.command("list")
@click.option(
    "--all",
    "every_source",
    is_flag=True,
    help="Every GGUF file: the registry, the models folder, Ollama, the Hugging Face cache, LM Studio, llm, llama.cpp's cache.",
)
@click.option("--json", "as_json", is_flag=True, help="With --all: one JSON list of the files.")
def models_list(every_source, as_json):
    """Known models and pairs, and GGUF files in the models folder."""
    if as_json and not every_source:
        raise BlendinError("--json lists every source: give --all too")
    if every_source:
        _list_every_source(as_json)
        return
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
    click.echo("(models list --all: GGUF files of Ollama, the Hugging Face cache, LM Studio, llm and llama.cpp too)")


def _list_every_source(as_json: bool) -> None:
    """`models list --all`: one row per GGUF file, read from its header alone (no model loads)."""
    rows = [_file_row(found) for found in _every_gguf_file()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'SOURCE':8} {'SPEC':44} {'SIZE':>9} {'ARCH':10} {'QUANT':9} {'VOCAB':>7} {'CHAT':4} NAME")
    for row in rows:
        described = row["name"] if row["error"] is None else f"unreadable: {row['error']}"
        click.echo(
            f"{row['source']:8} {row['spec']:44} {_size(row['size']):>9} {row['architecture'] or '-':10}"
            f" {row['quant'] or '-':9} {row['n_vocab'] or '-':>7} {'yes' if row['has_chat_template'] else 'no':4}"
            f" {described}"
        )


def _every_gguf_file() -> list[model_sources.FoundModel]:
    """The registry's installed files, then every source's; a path found twice (an assembled
    registry model is also in the models folder) is listed once, under its first name. Paths,
    not the files links lead to: each of two links to one file is a spec of its own."""
    registry = model_registry.load_registry()
    found = []
    for entry in registry.models.values():
        try:
            path = model_registry.locate(entry, verify=False, assemble=False)
        except BlendinError:
            continue  # not installed or not assembled: plain `models list` says which
        found.append(model_sources.FoundModel("registry", entry.name, path))
    found += model_sources.discover(model_registry.models_dir())
    seen: set[Path] = set()
    unique = []
    for model in found:
        key = Path(os.path.abspath(model.path))
        if key not in seen:
            seen.add(key)
            unique.append(model)
    return unique


def _file_row(found: model_sources.FoundModel) -> dict[str, Any]:
    row = {"source": found.source, "spec": found.spec, "path": str(found.path)}
    try:
        header = check_gguf_header(found.path)
        size = found.path.stat().st_size
    except (BlendinError, OSError) as e:
        return {**row, "size": None, **dict.fromkeys(_HEADER_FIELDS), "has_chat_template": False, "error": str(e)}
    return {
        **row,
        "size": size,
        "name": display_name(header, found.path),
        "architecture": header.architecture,
        "quant": header.quant,
        "file_type": header.file_type,
        "n_vocab": header.n_vocab,
        "has_chat_template": header.has_chat_template,
        "error": None,
    }


_HEADER_FIELDS = ("name", "architecture", "quant", "file_type", "n_vocab")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


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


@models.command("add")
@click.argument("name")
@click.argument("spec")
@click.option("--role", type=click.Choice(model_registry.ROLES), help="What the model is for.")
@click.option("--prompt", type=click.Choice(model_registry.USER_PROMPT_STYLES), help="How it is best prompted.")
@click.option("--description", default="", help="One line about it.")
@click.option("--force", is_flag=True, help="Replace a model of the same name (yours or a packaged one).")
@click.option("--no-check", is_flag=True, help="Add it without checking that SPEC resolves to a file.")
def models_add(name, spec, role, prompt, description, force, no_check):
    """Add the model NAME to your registry ($XDG_CONFIG_HOME/blendin/registry.toml): SPEC is a GGUF
    path (kept as an absolute path), a model spec or another model's name."""
    path = model_registry.add_model(name, spec, role, prompt, description, force=force, check=not no_check)
    click.echo(f"model {name} added to {path}")


@models.command("remove")
@click.argument("name")
def models_remove(name):
    """Remove the model NAME from your registry. Its GGUF file is not deleted; a packaged model of
    the same name comes back."""
    path = model_registry.remove_model(name)
    click.echo(f"model {name} removed from {path}")
