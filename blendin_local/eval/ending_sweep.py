"""Every ending threshold from one run: rows derived from a run that only measured its endings.

BlendIn's ending trigger decides only where an answer ends: the text up to there is the text
BlendIn writes without it (engine/methods.py; tests/engine/test_triggers.py checks it token for
token on scripted models). A row run with the trigger measuring only (the `+endprobe` switch, a
threshold above 1) records at every boundary the guide's end probability and where the text
stood (`end_checks`: tokens, characters, probability). The answer a threshold t gives is then
that answer cut at the first check whose probability reaches t, and is scored again offline.

So one row gives both "BlendIn without the ending trigger" (the row itself) and "with it" at
every threshold, for the cost of one, which is what lets the ablation sweep the threshold. A
judge's verdict cannot be derived: derived records carry none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from blendin_local.eval.datasets import EvalItem
from blendin_local.eval.scoring import score_item

PROBE_SWITCH = "+endprobe"


def is_probe_row(name: str) -> bool:
    return PROBE_SWITCH in name


def derived_name(probe_row: str, threshold: float) -> str:
    """`blendin+loop+endprobe+fewshot` at 0.3 -> `blendin+loop+end+fewshot@0.3`."""
    return f"{probe_row.replace(PROBE_SWITCH, '+end')}@{threshold:g}"


def first_ending(end_checks: Iterable[list | tuple], threshold: float) -> tuple[int, int] | None:
    """(tokens, characters) at the first check whose probability reaches `threshold`, if any."""
    for tokens, chars, probability in end_checks:
        if probability >= threshold:
            return int(tokens), int(chars)
    return None


def with_ending(record: dict, threshold: float, item: EvalItem, name: str) -> dict:
    """The record of the answer that `threshold` gives, from a probe row's record of `item`."""
    derived = {**record, "method": name, "derived_from": record["method"], "end_threshold": threshold}
    cut = first_ending(record.get("end_checks") or [], threshold)
    if cut is None:
        return derived
    tokens, chars = cut
    output = record["output"][:chars]
    scoring = score_item(item, output)
    intervened = [i for i in record["intervened"] if i < tokens]
    alphas = record["alphas"][: len(intervened)]
    derived.update(
        output=output,
        score=scoring.get("score"),
        scoring={k: v for k, v in scoring.items() if k != "score"},
        judge=None,
        stop_reason="eos",
        n_tokens=tokens,
        n_interventions=len(intervened),
        intervention_rate=len(intervened) / tokens if tokens else 0.0,
        alpha_mean=sum(alphas) / len(alphas) if alphas else None,
        alphas=alphas,
        guide_ranks=record["guide_ranks"][: len(intervened)],
        base_top_p=record["base_top_p"][:tokens],
        intervened=intervened,
        end_checks=[c for c in record["end_checks"] if c[0] <= tokens],
    )
    return derived


def derive_rows(
    rows: Mapping[str, list[dict]], items: Mapping[str, EvalItem], thresholds: Iterable[float]
) -> dict[str, list[dict]]:
    """Derived rows (name -> records) for every probe row among `rows` and every threshold."""
    derived: dict[str, list[dict]] = {}
    for row, records in rows.items():
        if not is_probe_row(row):
            continue
        for threshold in thresholds:
            name = derived_name(row, threshold)
            derived[name] = [with_ending(r, threshold, items[r["id"]], name) for r in records if r["id"] in items]
    return derived
