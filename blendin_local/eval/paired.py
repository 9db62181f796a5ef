"""Each row against one reference row on the items both answered: the paired difference of their
scores with a 95% interval.

Two rows of one run answer the same items, so the question "does this row beat the guide?" is
better asked item by item than by comparing two unpaired intervals: an item both fail or both
pass says nothing, and what is left varies much less. The interval is a percentile bootstrap
over items (seeded, so a report is the same each time it is written); it suits 0/1 scores and
IFEval's fractional ones alike, and needs nothing about their distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class PairedDifference:
    n: int  # items both rows answered
    difference: float  # mean of (row - reference)
    low: float  # its 95% interval
    high: float
    better: int  # items where the row scores higher
    worse: int  # and lower


def paired_difference(row: list[float], reference: list[float]) -> PairedDifference:
    """The difference of two rows' scores over the same items (row[i] and reference[i] are one item)."""
    if len(row) != len(reference) or not row:
        raise ValueError("paired scores need the same, non-zero number of items")
    d = np.asarray(row, dtype=float) - np.asarray(reference, dtype=float)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = d[rng.integers(0, len(d), size=(BOOTSTRAP_RESAMPLES, len(d)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return PairedDifference(len(d), float(d.mean()), float(low), float(high), int((d > 0).sum()), int((d < 0).sum()))


def item_scores(dataset: str, records: list[dict]) -> dict[str, dict[str, float]]:
    """Per measure, each item's score: IFEval's prompt-level loose and strict, else the score."""
    if dataset == "ifeval":
        measures = {"prompt loose": "prompt_loose", "prompt strict": "prompt_strict"}
        return {
            name: {r["id"]: float(r["scoring"][key]) for r in records if key in r.get("scoring", {})}
            for name, key in measures.items()
        }
    return {"score": {r["id"]: float(r["score"]) for r in records if r.get("score") is not None}}


def paired_table(dataset: str, by_method: dict[str, list[dict]], reference: str, order: list[str]) -> str:
    """Markdown: each row of `order` but the reference, against it, per measure; "" without it."""
    if reference not in by_method:
        return ""
    against = item_scores(dataset, by_method[reference])
    lines = [
        f"Against `{reference}`, item by item (the items both answered; difference = row - {reference}, "
        "95% bootstrap interval; better/worse: items where the row scores higher/lower):\n",
        "| row | measure | items | difference | 95% interval | better | worse |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for method in order:
        if method == reference:
            continue
        for measure, scores in item_scores(dataset, by_method[method]).items():
            common = [i for i in scores if i in against.get(measure, {})]
            if not common:
                continue
            p = paired_difference([scores[i] for i in common], [against[measure][i] for i in common])
            lines.append(
                f"| {method} | {measure} | {p.n} | {p.difference:+.3f} | {p.low:+.3f} to {p.high:+.3f} "
                f"| {p.better} | {p.worse} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 3 else ""
