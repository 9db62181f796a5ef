"""Is a pair worth a long run? The paper's diagnostic, measured on a small sample.

Bad guidance confuses the base, which then intervenes *more*: pairs above about 20%
intervention tended to fail in the paper (intervention share correlated with score at r = -0.65
on GSM8K, -0.76 on XSTest), and this shows on a small sample. The verdict also looks at the
bridge (a guide that cannot write the base's tokens cannot help) and at agreement (how often
the guide's favourite token is among the base's top-k where it intervenes).

Exit codes carry the verdict: 0 worth it, 3 borderline, 4 not worth it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import mean

import numpy as np

from blendin_local.engine.settings import GenerationSettings

WORTH_IT, BORDERLINE, NOT_WORTH_IT = 0, 3, 4
FAILING_RATE = 0.20  # the paper: pairs above about 20% intervention tend to fail
COMFORTABLE_RATE = 0.10
MIN_EXACT_COVERAGE = 50.0  # % of guide tokens with an exact base token
TOP_K = 10
TARGET_RATE = 0.10  # the suggested gamma aims at about this share of interventions


@dataclass(frozen=True)
class Diagnosis:
    exact_pct: float
    prefix_pct: float
    unmapped_pct: float
    n_answers: int
    blendin_rate: float
    nudging_rate: float
    guide_in_base_top_k: float | None  # at BlendIn interventions
    mean_alpha: float | None
    suggested_gamma: float
    verdict: str
    reason: str
    exit_code: int

    def as_dict(self) -> dict:
        return asdict(self)


def suggest_gamma(base_top_ps: list[float], target: float = TARGET_RATE) -> float:
    """The gamma below which about `target` of the base's steps fall, rounded to 0.05."""
    if not base_top_ps:
        return GenerationSettings.model_fields["gamma"].default  # nothing measured: the paper's
    gamma = float(np.quantile(np.asarray(base_top_ps), target))
    return round(min(0.9, max(0.05, round(gamma / 0.05) * 0.05)), 2)


def judge_pair(coverage: dict, blendin: list[dict], nudging: list[dict]) -> Diagnosis:
    """The verdict from bridge coverage and per-answer records (see runner.sample_record)."""
    rate = mean(r["intervention_rate"] for r in blendin) if blendin else 0.0
    nudge_rate = mean(r["intervention_rate"] for r in nudging) if nudging else 0.0
    ranks = [k for r in blendin for k in r["guide_ranks"]]
    agreement = mean(k < TOP_K for k in ranks) if ranks else None
    alphas = [a for r in blendin for a in r["alphas"]]
    gamma = suggest_gamma([p for r in blendin for p in r["base_top_p"] if p is not None])
    exact = coverage["exact_pct"]
    if exact < MIN_EXACT_COVERAGE:
        verdict, code = "not worth it", NOT_WORTH_IT
        reason = f"only {exact:.0f}% of the guide's tokens exist in the base vocabulary: its guidance mostly cannot be written"
    elif rate > FAILING_RATE:
        verdict, code = "not worth it", NOT_WORTH_IT
        reason = (
            f"BlendIn intervened on {100 * rate:.0f}% of tokens: above the ~20% where the paper's pairs "
            "failed, a sign that the guidance confuses the base"
        )
    elif rate > COMFORTABLE_RATE or (agreement is not None and agreement < 0.5):
        verdict, code = "borderline", BORDERLINE
        reason = (
            f"BlendIn intervened on {100 * rate:.0f}% of tokens"
            + (
                f" and the guide's top token was in the base's top {TOP_K} at {100 * agreement:.0f}% of them"
                if agreement is not None
                else ""
            )
            + ": check a larger sample before a long run"
        )
    else:
        verdict, code = "worth it", WORTH_IT
        reason = f"BlendIn intervened on {100 * rate:.0f}% of tokens, well below the ~20% where pairs tend to fail"
    return Diagnosis(
        exact,
        coverage["prefix_pct"],
        coverage["unmapped_pct"],
        len(blendin),
        rate,
        nudge_rate,
        agreement,
        mean(alphas) if alphas else None,
        gamma,
        verdict,
        reason,
        code,
    )
