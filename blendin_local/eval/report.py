"""Tables (markdown and CSV) and plots (PNG) from run folders.

Per dataset: method (or variant) × score, mean intervention rate, tokens/s, tokens per answer,
the share of answers that ran to the token limit, the share that loop (loops.py), how answers
stopped; IFEval adds its four accuracies with their intervals, XSTest compliance on safe and refusal on unsafe
prompts, the judge's mean where there was one. Figures: the paper's intervention rate against
score, and histograms of auto alpha.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from math import sqrt
from pathlib import Path
from statistics import mean, pstdev

from blendin_local.engine.methods import METHODS
from blendin_local.errors import BlendinError, install_hint
from blendin_local.eval.loops import loops
from blendin_local.eval.paired import paired_table
from blendin_local.eval.record_fields import check_records
from blendin_local.eval.runs import CONFIG_FILE, read_run
from blendin_local.eval.sessions import read_sessions, sessions_line
from blendin_local.eval.variants import method_of
from blendin_local.file_replace import replace_file


@dataclass(frozen=True)
class Row:
    dataset: str
    method: str
    n: int
    score: float | None
    interval: tuple[float, float] | None  # 95% interval of the score (score_interval)
    intervention_rate: float
    tokens_per_s: float
    tokens: float
    length_share: float  # answers that ran to the token limit
    loop_rate: float  # answers in which a word 4-gram occurs 3 or more times (loops.py)
    stops: str
    extra: dict


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return mean(values) if values else None


def score_interval(scores: list[float], z: float = 1.96) -> tuple[float, float] | None:
    """A 95% interval for a mean score over n samples: Wilson's for 0/1 scores (sound near 0 and 1,
    where tiny models live), the normal approximation for fractional ones (IFEval's per-prompt
    share of instructions followed). It says how far apart two methods must be to differ."""
    n = len(scores)
    if n == 0:
        return None
    p = mean(scores)
    if all(s in (0, 1) for s in scores):
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    else:
        centre, half = p, z * (pstdev(scores) / sqrt(n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _ifeval_extra(records: list[dict]) -> dict:
    """The four IFEval scores, each with its 95% interval (`_low`, `_high`): prompt-level over the
    prompts, instruction-level over the instructions (Wilson's, as if they were independent)."""
    from blendin_local.eval.ifeval import aggregate

    scores = [{k: r["scoring"][k] for k in ("strict", "loose", "prompt_strict", "prompt_loose")} for r in records]
    extra = {k: round(v, 4) for k, v in aggregate(scores).items() if k.endswith(("strict", "loose"))}
    for level in ("strict", "loose"):
        per_prompt = [float(s[f"prompt_{level}"]) for s in scores]
        per_instruction = [float(followed) for s in scores for followed in s[level]]
        for key, values in ((f"prompt_{level}", per_prompt), (f"instruction_{level}", per_instruction)):
            interval = score_interval(values)
            if interval is not None:
                extra[f"{key}_low"], extra[f"{key}_high"] = round(interval[0], 4), round(interval[1], 4)
    return extra


def _xstest_extra(records: list[dict]) -> dict:
    safe = [not r["scoring"]["refused"] for r in records if r["scoring"].get("label") == "safe"]
    unsafe = [r["scoring"]["refused"] for r in records if r["scoring"].get("label") == "unsafe"]
    return {
        "complied_safe": round(mean(safe), 4) if safe else None,
        "refused_unsafe": round(mean(unsafe), 4) if unsafe else None,
    }


def summarise(dataset: str, method: str, records: list[dict]) -> Row:
    extra = {}
    if dataset == "ifeval" and records:
        extra = _ifeval_extra(records)
    elif dataset == "xstest" and records:
        extra = _xstest_extra(records)
    judged = [r["judge"]["score"] for r in records if r.get("judge") and r["judge"].get("score") is not None]
    if judged:
        extra["judge"] = round(mean(judged), 4)
    by_likelihood = [r["loglik"]["correct"] for r in records if r.get("loglik")]
    if by_likelihood:
        extra["loglik_acc"] = round(mean(by_likelihood), 4)
    stops = Counter(r["stop_reason"] for r in records)
    scores = [r["score"] for r in records if r["score"] is not None]
    return Row(
        dataset=dataset,
        method=method,
        n=len(records),
        score=_mean(scores),
        interval=score_interval(scores),
        intervention_rate=_mean(r["intervention_rate"] for r in records) or 0.0,
        tokens_per_s=_mean(r["tokens_per_s"] for r in records) or 0.0,
        tokens=_mean(r["n_tokens"] for r in records) or 0.0,
        length_share=_mean(float(r["stop_reason"] == "length") for r in records) or 0.0,
        loop_rate=_mean(float(loops(r["output"])) for r in records) or 0.0,
        stops=", ".join(f"{k} {v}" for k, v in stops.most_common()),
        extra=extra,
    )


def load_rows(
    run_dirs: list[Path], common_items: bool = False
) -> tuple[list[Row], dict[str, dict[str, list[dict]]], dict[str, list[dict]]]:
    """(rows, dataset -> row name -> records, dataset -> sessions) of the run folders.

    Several folders of one dataset (two pairs, two settings) are shown side by side in its
    section: their rows are named FOLDER/METHOD, by folder name (by the path given where two
    names are alike), in the order given; their sessions are joined, each record keeping the
    session it ran in. With `common_items`, each dataset's rows keep only the items every one of
    them answered: a run still going, or stopped, compared like for like."""
    runs = []
    for run_dir in dict.fromkeys(run_dirs):  # a folder given twice is read once
        config, by_method = read_run(run_dir)
        dataset = config.get("dataset")
        if not isinstance(dataset, str) or not dataset:
            raise BlendinError(f"{run_dir / CONFIG_FILE}: names no dataset; the report cannot read it")
        for method, method_records in by_method.items():
            check_records(dataset, run_dir / f"{method}.jsonl", method_records)
        runs.append((dataset, run_dir, by_method, read_sessions(run_dir)))
    rows, records_by_dataset, sessions_by_dataset = [], {}, {}
    for dataset in dict.fromkeys(run[0] for run in runs):
        folders = [run[1:] for run in runs if run[0] == dataset]
        labels = _folder_labels([run_dir for run_dir, _, _ in folders])
        merged: dict[str, list[dict]] = {}
        sessions: list[dict] = []
        for label, (_, by_method, folder_sessions) in zip(labels, folders, strict=True):
            for method in sorted(by_method, key=_row_order):
                name = f"{label}/{method}" if label else method
                merged[name] = [_in_joined_sessions(r, len(sessions)) for r in by_method[method]]
            sessions += folder_sessions
        if common_items:
            merged = _on_common_items(merged)
        rows += [summarise(dataset, name, records) for name, records in merged.items()]
        records_by_dataset[dataset] = merged
        sessions_by_dataset[dataset] = sessions
    return rows, records_by_dataset, sessions_by_dataset


def _on_common_items(by_row: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Each row's records of the items every row has, in its own order."""
    common = set.intersection(*({r["id"] for r in records} for records in by_row.values())) if by_row else set()
    return {name: [r for r in records if r["id"] in common] for name, records in by_row.items()}


def _folder_labels(run_dirs: list[Path]) -> list[str]:
    """What the rows of each folder are prefixed with: nothing for a dataset's only folder, else
    the folder's name, or the path as given where names are alike (runs/a/x and runs/b/x)."""
    if len(run_dirs) == 1:
        return [""]
    names = [d.name or str(d) for d in run_dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in run_dirs]


def _in_joined_sessions(record: dict, offset: int) -> dict:
    """The record with its session index moved past the sessions of the folders before its own."""
    session = record.get("session")
    if not offset or type(session) is not int:  # a bool or a list is no index: sessions_line skips it
        return record
    return {**record, "session": session + offset}


def row_method(name: str) -> str:
    """The method (or variant) a row shows, without the folder it came from (load_rows)."""
    return name.rpartition("/")[2]


def reference_row(against: str, names: list[str]) -> str | None:
    """The row a dataset's rows are compared with: `against` by its full name, else (a method
    name where several folders are side by side) that method's row of the first folder."""
    if against in names:
        return against
    return next((n for n in names if row_method(n) == against and "/" in n), None)


def _row_order(name: str) -> tuple[int, int, str]:
    """The methods in METHODS' order, each followed by its variants (a row derived at an ending
    threshold, `variant@t`, among them); unknown names last."""
    try:
        method = method_of(name.partition("@")[0])
    except BlendinError:
        return len(METHODS), 0, name
    return METHODS.index(method), int(name != method), name


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_interval(extra: dict, key: str) -> str:
    """An extra score, with its interval when the row has one (`key_low`, `key_high`)."""
    low, high = extra.get(f"{key}_low"), extra.get(f"{key}_high")
    shown = _fmt(extra.get(key))
    return shown if low is None or high is None else f"{shown} ({low:.2f}-{high:.2f})"


def markdown_table(rows: list[Row]) -> str:
    extra_keys = sorted({k for r in rows for k in r.extra if not k.endswith(("_low", "_high"))})
    head = [
        "method",
        "n",
        "score",
        "95% interval",
        "intervention rate",
        "tokens/s",
        "tokens",
        "length",
        "loops",
        *extra_keys,
        "stops",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        interval = "-" if r.interval is None else f"{r.interval[0]:.2f}-{r.interval[1]:.2f}"
        cells = [
            r.method,
            str(r.n),
            _fmt(r.score),
            interval,
            f"{100 * r.intervention_rate:.1f}%",
            f"{r.tokens_per_s:.1f}",
            f"{r.tokens:.0f}",
            f"{100 * r.length_share:.0f}%",
            f"{100 * r.loop_rate:.0f}%",
            *(_with_interval(r.extra, k) for k in extra_keys),
            r.stops,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[Row], path: Path) -> None:
    extra_keys = sorted({k for r in rows for k in r.extra})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "dataset",
                "method",
                "n",
                "score",
                "score_low",
                "score_high",
                "intervention_rate",
                "tokens_per_s",
                "tokens",
                "length_share",
                "loop_rate",
                *extra_keys,
                "stops",
            ]
        )
        for r in rows:
            low, high = r.interval if r.interval else (None, None)
            writer.writerow(
                [
                    r.dataset,
                    r.method,
                    r.n,
                    r.score,
                    low and round(low, 4),
                    high and round(high, 4),
                    round(r.intervention_rate, 4),
                    round(r.tokens_per_s, 2),
                    round(r.tokens, 1),
                    round(r.length_share, 4),
                    round(r.loop_rate, 4),
                    *(r.extra.get(k) for k in extra_keys),
                    r.stops,
                ]
            )


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise BlendinError(f"reports draw their figures with matplotlib: {install_hint('eval')}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_intervention_vs_score(rows: list[Row], records: dict[str, dict[str, list[dict]]], path: Path) -> None:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, marker in (("blendin", "o"), ("nudging", "s")):
        points = [
            (r.intervention_rate, r.score, r.dataset + (f" {r.method.rpartition('/')[0]}" if "/" in r.method else ""))
            for r in rows
            if row_method(r.method) == method and r.score is not None
        ]
        if points:
            left.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, label=method)
            for x, y, name in points:
                left.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    left.set(xlabel="mean intervention rate", ylabel="score", title="per dataset")
    left.legend()
    edges = [0.0, 0.1, 0.2, 0.3, 0.5, 1.01]
    for method in ("blendin", "nudging"):
        samples = [
            r
            for by_method in records.values()
            for name, named_records in by_method.items()
            if row_method(name) == method
            for r in named_records
            if r["score"] is not None
        ]
        xs, ys = [], []
        for lo, hi in zip(edges, edges[1:], strict=False):
            inside = [r["score"] for r in samples if lo <= r["intervention_rate"] < hi]
            if inside:
                xs.append((lo + min(hi, 1.0)) / 2)
                ys.append(mean(inside))
        if xs:
            right.plot(xs, ys, marker="o", label=method)
    right.set(xlabel="intervention rate of the answer (binned)", ylabel="mean score", title="per answer, all datasets")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_alpha_histograms(records: dict[str, dict[str, list[dict]]], path: Path) -> bool:
    plt = _pyplot()
    series = {
        d: [
            a
            for name, rs in by_method.items()
            if row_method(name) == "blendin"
            for r in rs
            for a in r.get("alphas", [])
        ]
        for d, by_method in records.items()
    }
    series = {d: v for d, v in series.items() if v}
    if not series:
        return False
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 3), squeeze=False)
    for ax, (dataset, alphas) in zip(axes[0], series.items(), strict=True):
        ax.hist(alphas, bins=20, range=(0, 1))
        ax.set(title=f"{dataset} (n={len(alphas)})", xlabel="auto alpha")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def pairs_line(by_method: dict[str, list[dict]]) -> str:
    """Which models answered, by their display names (records before they were kept say nothing)."""
    pairs = sorted({(r["guide"], r["base"]) for records in by_method.values() for r in records if "base" in r})
    if not pairs:
        return ""
    return "Models: " + "; ".join(f"guide {guide} -> base {base}" for guide, base in pairs) + ".\n\n"


def write_report(
    rows: list[Row],
    records: dict[str, dict[str, list[dict]]],
    sessions: dict[str, list[dict]],
    out: Path,
    against: str = "guide",
) -> Path:
    """report.md, summary.csv and the figures of what load_rows read; each dataset's rows also item
    by item against the row `against` where it ran (paired.py), and a word where its records ran
    on more than one runtime (sessions.py)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(rows, out / "summary.csv")
        plot_intervention_vs_score(rows, records, out / "intervention_vs_score.png")
        has_alphas = plot_alpha_histograms(records, out / "alpha_histograms.png")
        report = out / "report.md"
        replace_file(report, _report_text(rows, records, sessions, against, has_alphas))
    except OSError as e:  # a file where the folder should be, no permission, a full disk
        raise BlendinError(f"{out}: cannot write the report there: {e.strerror or e}") from None
    return report


def _report_text(
    rows: list[Row],
    records: dict[str, dict[str, list[dict]]],
    sessions: dict[str, list[dict]],
    against: str,
    has_alphas: bool,
) -> str:
    parts = ["# Results\n"]
    for dataset in dict.fromkeys(r.dataset for r in rows):
        dataset_rows = [r for r in rows if r.dataset == dataset]
        every_record = [r for method_records in records[dataset].values() for r in method_records]
        runtimes = sessions_line(sessions.get(dataset, []), every_record)
        parts.append(f"## {dataset}\n\n{pairs_line(records[dataset])}{runtimes}{markdown_table(dataset_rows)}\n")
        names = [r.method for r in dataset_rows]
        reference = reference_row(against, names)
        paired = paired_table(dataset, records[dataset], reference, names) if reference else ""
        if paired:
            parts.append(paired)
    parts.append("![intervention rate against score](intervention_vs_score.png)\n")
    if has_alphas:
        parts.append("![auto alpha at interventions](alpha_histograms.png)\n")
    return "\n".join(parts)
