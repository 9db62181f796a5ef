"""The `blendin` command: a thin shell over the Python API (pair.py), one module per command.

The commands share their options through options.py and never import each other; serve imports
FastAPI only when it runs, so that `blendin --help` stays fast.
"""

from __future__ import annotations

import sys

import click

from blendin_local.errors import BlendinError
from blendin_local.interfaces.cli.chat import chat
from blendin_local.interfaces.cli.doctor import doctor
from blendin_local.interfaces.cli.eval import diagnose, eval_group
from blendin_local.interfaces.cli.generate import generate
from blendin_local.interfaces.cli.models import models
from blendin_local.interfaces.cli.options import read_text_as_utf8
from blendin_local.interfaces.cli.pair_check import check as pair_check
from blendin_local.interfaces.cli.pairs import pair_group
from blendin_local.interfaces.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="blendin-local")
def cli():
    """BlendIn: an unaligned base model guided by a small aligned model, offline."""


pair_group.add_command(pair_check)
for command in (generate, models, pair_group, doctor, eval_group, diagnose, chat, serve):
    cli.add_command(command)


def main(argv=None) -> None:
    read_text_as_utf8(cli)
    try:
        cli.main(args=argv, prog_name="blendin", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("blendin: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("\nblendin: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        click.echo(f"blendin: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except BlendinError as e:
        click.echo(f"blendin: error: {e}", err=True)
        sys.exit(1)
    except BrokenPipeError:
        sys.exit(141)
