"""`blendin doctor`: what this installation is."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@click.option("--no-probe", is_flag=True, help="Do not run the CPU-kernel probe when no verdict is cached.")
def doctor(as_json, no_probe):
    """What this installation is: versions, llama.cpp build, CPU, kernel probe, models, extras."""
    from blendin_local.interfaces import doctor as doctor_report

    report = doctor_report.collect(run_probe=not no_probe)
    click.echo(json.dumps(report, indent=1) if as_json else doctor_report.render(report))
