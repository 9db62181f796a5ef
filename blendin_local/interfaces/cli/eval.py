"""`blendin eval`, `blendin eval report` and `blendin diagnose`: thin shells over blendin_local.eval."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from blendin_local.backends.cpu_kernels import cpu_model_name
from blendin_local.backends.llama import LlamaModel, default_threads
from blendin_local.engine.methods import METHODS
from blendin_local.engine.prompts import preview
from blendin_local.engine.settings import GenerationSettings, check_anti
from blendin_local.errors import BlendinError
from blendin_local.eval.datasets import DATASETS, DEFAULT_SEED, load_dataset, resolve_data_dir, sample_items
from blendin_local.eval.judge import Judge
from blendin_local.eval.runner import run_samples
from blendin_local.eval.runs import RunFolder
from blendin_local.eval.sessions import SESSIONS_FILE
from blendin_local.eval.variants import method_of
from blendin_local.interfaces.cli.options import UTF8_TEXT, generation_options, model_options
from blendin_local.interfaces.doctor import installed_version, llama_cpp_info


def parse_methods(text: str, with_anti: bool) -> list[str]:
    """Method names, or variants of them with switches (eval/variants.py), or all."""
    if text == "all":
        return [m for m in METHODS if m != "proxy" or with_anti]
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise BlendinError(f"no method in {text!r}; known: {', '.join(METHODS)}, or all")
    for name in methods:
        check_anti(method_of(name), with_anti, asked_as=f"--methods {name}")
    return list(dict.fromkeys(methods))


# Fields an eval run does not take from the command line: the methods come from --methods, and
# the rest are left at the model's defaults, so that a run folder's recorded settings (which
# --resume compares) stay what they were before the options were generated.
EVAL_FIXED_FIELDS = (
    "method",
    "top_k",
    "top_p",
    "min_p",
    "stop",
    "stop_at_new_turn",
    "system",
    "base_prompt",
    "guide_prompt",
    "top_logprobs",
)
# A benchmark answer reasons at length, and one run is reproducible as a whole.
EVAL_DEFAULTS = {"max_tokens": 512, "seed": 0}


def model_identity(model) -> dict:
    if hasattr(model, "identity"):  # a model on a server (remote_backend.RemoteModel)
        return model.identity()
    return {"file": model.path.name, "size": model.path.stat().st_size}


def model_runtime(model) -> dict:
    """What a model's numbers depend on besides its file (sessions.py)."""
    if isinstance(model, LlamaModel):
        return {"threads": model.threads, "repacked_kernels": model.uses_extra_buffers}
    return {"on_a_server": True}  # whose build and threads it does not tell


def session_runtime(pair, jobs: int) -> dict:
    """What this invocation runs on: the library, its llama.cpp build, the CPU, and per model
    (the versions and build as `blendin doctor` reads them)."""
    llama = llama_cpp_info()
    runtime = {
        "blendin_local": installed_version("blendin-local"),  # None from an uninstalled source tree
        "llama_cpp_python": llama["llama_cpp_python"],
        "llama_cpp_build": llama["system_info"],
        "cpu": cpu_model_name(),
        "jobs": jobs,
        "base": model_runtime(pair.base),
        "guide": model_runtime(pair.guide),
    }
    if pair.anti is not None:
        runtime["anti"] = model_runtime(pair.anti)
    return runtime


@click.group("eval", invoke_without_command=True)
@click.option("--dataset", type=click.Choice(DATASETS), help="The benchmark to run.")
@click.option(
    "--methods",
    default="base,guide,nudging,blendin",
    show_default=True,
    help="Comma-separated, or all. A method may carry switches: blendin+loop-end+fewshot turns the loop"
    " trigger on, the ending trigger off and the few-shot base prompt on (its row keeps that name).",
)
@click.option(
    "--limit", type=click.IntRange(1), default=None, help="A seeded subset of this many items [default: all]."
)
@click.option(
    "--sample-seed", type=int, default=DEFAULT_SEED, show_default=True, help="Seed of the subset (the paper's)."
)
@click.option(
    "--data-dir", type=click.Path(), default=None, help="Folder with the benchmark files [default: $BLENDIN_DATA_DIR]."
)
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (one JSON line per sample and method).")
@click.option("--resume", is_flag=True, help="Continue the run in --out.")
@click.option(
    "--jobs", type=click.IntRange(1, 32), default=1, show_default=True, help="Samples at once (one pair each)."
)
@generation_options(exclude=EVAL_FIXED_FIELDS, defaults=EVAL_DEFAULTS)
@click.option("--judge-url", help="An OpenAI-compatible endpoint for an LLM judge, e.g. http://127.0.0.1:8080/v1.")
@click.option("--judge-model", help="The judge's model name at --judge-url.")
@click.option(
    "--loglik/--no-loglik",
    default=True,
    show_default=True,
    help="Also score multiple-choice items by which option each method finds most likely.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@model_options
@click.pass_context
def eval_group(
    ctx,
    dataset,
    methods,
    limit,
    sample_seed,
    data_dir,
    out,
    resume,
    jobs,
    settings_values,
    judge_url,
    judge_model,
    loglik,
    no_progress,
    models,
):
    """Run the paper's experiments on a benchmark: `blendin eval --dataset gsm8k --limit 200 --out runs/gsm8k`."""
    if ctx.invoked_subcommand is not None:
        return
    if dataset is None or out is None:
        raise BlendinError("blendin eval needs --dataset and --out (or a subcommand: report)")
    if (judge_url is None) != (judge_model is None):
        raise BlendinError("--judge-url and --judge-model go together")
    common = settings_values  # recorded in the run's configuration, which --resume compares
    GenerationSettings.checked(**common)  # a bad number is one line before the data and the models load
    method_list = parse_methods(methods, models.anti is not None)
    items = sample_items(load_dataset(dataset, resolve_data_dir(data_dir)), limit, sample_seed)
    judge = None
    if judge_url:
        judge = Judge(judge_url, judge_model)
        judge.check()
    config = {
        "format": 1,
        "dataset": dataset,
        "limit": limit,
        "sample_seed": sample_seed,
        "n_items": len(items),
        "settings": {**common, "ctx_size": models.ctx_size},
        "judge": {"url": judge_url, "model": judge_model} if judge else None,
    }
    if any(item.choices for item in items):
        config["loglik"] = loglik
    # A run written before a setting existed ran with that setting's default.
    assumed = {"settings": GenerationSettings().model_dump()}
    folder = RunFolder.hold(out)
    try:
        folder.check(config, resume, assumed)  # a wrong --out or a forgotten --resume, before the models load
        # N pairs split the threads: llama.cpp's spinning threads slow ~10x when they outnumber cores.
        share = models.threads if jobs == 1 else max(1, (models.threads or default_threads()) // jobs)
        pairs = [models.load(threads=share) for _ in range(jobs)]
        config["base"] = model_identity(pairs[0].base)
        config["guide"] = model_identity(pairs[0].guide)
        config["anti"] = model_identity(pairs[0].anti) if pairs[0].anti else None
        folder.start(config, resume, assumed, runtime=session_runtime(pairs[0], jobs))
        if folder.runtime_changes:
            click.echo(
                "blendin: this run continues on another runtime than its last session"
                f" ({'; '.join(folder.runtime_changes[:3])}): greedy texts can part from earlier ones at"
                f" near-ties (docs/design.md); {out / SESSIONS_FILE} lists them",
                err=True,
            )
        ran = run_samples(pairs, items, method_list, common, folder, judge, progress=not no_progress, loglik=loglik)
    except KeyboardInterrupt:
        if not folder.config:  # before the models loaded: no run was started there
            click.echo("\nblendin: interrupted before the run started; nothing was written", err=True)
            sys.exit(130)
        saved = sum(len(ids) for ids in folder.done.values())
        click.echo(f"\nblendin: interrupted; {saved} samples are saved in {out}: continue with --resume", err=True)
        sys.exit(130)
    finally:
        folder.close()
    click.echo(f"{ran} samples run, {len(items) * len(method_list)} in {out}", err=True)


@eval_group.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("report"),
    show_default=True,
    help="Folder for report.md, summary.csv and the PNG figures.",
)
@click.option(
    "--against",
    type=UTF8_TEXT,
    default="guide",
    show_default=True,
    help="report.md also compares every row with this one item by item, where it ran (FOLDER/METHOD where"
    " folders of one dataset are side by side; a bare METHOD is the first folder's).",
)
@click.option(
    "--common-items",
    is_flag=True,
    help="Each dataset's rows on the items every one of them answered (a run still going, compared like for like).",
)
@click.pass_context
def eval_report(ctx, run_dirs, out, against, common_items):
    """Tables and plots from run folders: blendin eval report runs/gsm8k runs/ifeval --out report.

    Folders of one dataset (two pairs, say) are shown side by side, their rows named FOLDER/METHOD."""
    from blendin_local.eval.report import load_rows, markdown_table, reference_row, write_report

    rows, records, sessions = load_rows(list(run_dirs), common_items)
    names = sorted({r.method for r in rows})
    if reference_row(against, names) is None and ctx.get_parameter_source("against") is not ParameterSource.DEFAULT:
        raise BlendinError(f"--against {preview(against)}: no such row in these runs (rows: {', '.join(names)})")
    path = write_report(rows, records, sessions, out, against)
    for dataset in dict.fromkeys(r.dataset for r in rows):
        click.echo(f"\n{dataset}\n{markdown_table([r for r in rows if r.dataset == dataset])}")
    click.echo(f"\nwritten: {path}, {out / 'summary.csv'}, figures in {out}", err=True)


@click.command("diagnose")
@click.option("--dataset", type=click.Choice(DATASETS), default="gsm8k", show_default=True)
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@click.option(
    "--data-dir", type=click.Path(), default=None, help="Folder with the benchmark files [default: $BLENDIN_DATA_DIR]."
)
@generation_options(include=("max_tokens", "gamma"), defaults={"max_tokens": 128})
@click.option("--json", "as_json", is_flag=True, help="Print the diagnosis as one JSON object.")
@model_options
def diagnose(dataset, limit, data_dir, settings_values, as_json, models):
    """Before a long run: is this pair worth it? Exit code 0 worth it, 3 borderline, 4 not worth it."""
    import json

    from blendin_local.eval.diagnose import agreement_line, coverage_line, judge_pair, suggestion_line
    from blendin_local.eval.runner import run_samples

    GenerationSettings.checked(**settings_values)  # before the data and the models load
    max_tokens, gamma = settings_values["max_tokens"], settings_values["gamma"]
    items = sample_items(load_dataset(dataset, resolve_data_dir(data_dir)), limit)
    pair = models.load()
    coverage = pair.bridge.stats().as_dict()
    records: dict[str, list[dict]] = {"blendin": [], "nudging": []}
    folder = InMemoryRun(dataset)
    run_samples(
        [pair],
        items,
        ["blendin", "nudging"],
        settings_values,
        folder,
        on_record=lambda r: records[r["method"]].append(r),
        progress=not as_json,
    )
    result = judge_pair(coverage, records["blendin"], records["nudging"])
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(f"pair: {pair.guide.name} -> {pair.base.name}")
        click.echo(coverage_line(coverage))
        click.echo(f"sample: {result.n_answers} {dataset} questions, gamma {gamma}, up to {max_tokens} tokens")
        click.echo(
            f"BlendIn intervention rate: {100 * result.blendin_rate:.1f}%   Nudging: {100 * result.nudging_rate:.1f}%"
        )
        click.echo(agreement_line(result.guide_in_base_top_k, result.mean_alpha))
        click.echo(suggestion_line(result.suggested_gamma, result.suggested_gamma_note))
        click.echo(f"verdict: {result.verdict}: {result.reason}")
    sys.exit(result.exit_code)


class InMemoryRun:
    """A run 'folder' that keeps nothing: diagnosis needs the records, not files."""

    def __init__(self, dataset: str):
        self.config = {"dataset": dataset}
        self.earlier: list[dict] = []

    def is_done(self, method: str, sample_id: str) -> bool:
        return False

    def append(self, method: str, record: dict) -> None:
        pass
