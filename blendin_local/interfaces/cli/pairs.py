"""`blendin pair`: named pairs in the user registry (backends/registry.py), used with --pair NAME."""

from __future__ import annotations

import json
from typing import Any

import click

from blendin_local.backends import registry
from blendin_local.backends.registry import PairEntry
from blendin_local.engine.settings import ALPHA_AUTO
from blendin_local.interfaces.cli.options import CTX_SIZE, generation_options, given


@click.group("pair")
def pair_group():
    """Named pairs: a base, a guide and their settings, for --pair NAME on every command that
    loads models. Yours are kept in $XDG_CONFIG_HOME/blendin/registry.toml (~/.config/...)."""


@pair_group.command("add")
@click.argument("name")
@click.option("--base", required=True, help="Base model: registry name, model spec or GGUF path.")
@click.option("--guide", required=True, help="Guide model: registry name, model spec or GGUF path.")
@generation_options(include=registry.PAIR_SETTINGS)
@click.option("-c", "--ctx-size", type=CTX_SIZE, help="Context size of each model [default: the command's, 4096].")
@click.option("--force", is_flag=True, help="Replace a pair of the same name (yours or a packaged one).")
@click.option("--no-check", is_flag=True, help="Add it without checking that both models resolve to files.")
def pair_add(name, base, guide, settings_values, ctx_size, force, no_check):
    """Add the pair NAME to your registry. The settings given here become the defaults of a command
    run with --pair NAME; options given to that command still win."""
    ctx = click.get_current_context()
    settings = {key: value for key, value in settings_values.items() if given(ctx, key)}
    path = registry.add_pair(name, base, guide, settings, ctx_size, force=force, check=not no_check)
    click.echo(f"pair {name} added to {path}")


@pair_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of the pairs.")
def pair_list(as_json):
    """Known pairs: the packaged ones and yours (yours replace packaged ones of the same name)."""
    known = registry.load_registry()
    entries = [registry.pair_entry(name, known) for name in sorted(known.pairs)]
    if as_json:
        click.echo(json.dumps([as_record(entry) for entry in entries], ensure_ascii=False))
        return
    for entry in entries:
        settings = "".join(f" {key}={shown(value)}" for key, value in as_record(entry)["settings"].items())
        origin = "yours" if entry.user else "packaged"
        click.echo(f"{entry.name:20} {entry.guide} -> {entry.base}{settings} ({origin})")


@pair_group.command("remove")
@click.argument("name")
def pair_remove(name):
    """Remove the pair NAME from your registry (a packaged pair it replaced comes back)."""
    path = registry.remove_pair(name)
    click.echo(f"pair {name} removed from {path}")


def as_record(entry: PairEntry) -> dict[str, Any]:
    """A pair as `pair list --json` prints it: its settings as the registry file writes them."""
    settings = {key: ALPHA_AUTO if key == "alpha" and value is None else value for key, value in entry.settings.items()}
    if entry.ctx_size is not None:
        settings["ctx_size"] = entry.ctx_size
    return {
        "name": entry.name,
        "base": entry.base,
        "guide": entry.guide,
        "settings": settings,
        "source": "user" if entry.user else "packaged",
    }


def shown(value: Any) -> str:
    """A setting on one line: text quoted (a prompt format may hold line breaks), numbers as they are."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) and value != ALPHA_AUTO else str(value)
