"""Is a pair worth a long run? The paper's diagnostic, measured on a small sample.

Bad guidance confuses the base, which then intervenes *more*: pairs above about 20%
intervention tended to fail in the paper (intervention share correlated with score at r = -0.65
on GSM8K, -0.76 on XSTest), and this shows on a small sample. The verdict also looks at the
bridge (a guide that cannot write the base's tokens cannot help) and at agreement (how often
the guide's favourite token is among the base's top-k where it intervenes).

The gamma suggestion goes past the paper, which fixes gamma at 0.4: BlendIn intervenes where
the base's top-1 probability is below gamma, so the base's top-1 probabilities recorded on one
pass give the intervention rate at every gamma (`intervention_rate`, `rate_curve`), and
`suggest_gamma` picks the one that puts it in a target band. `blendin diagnose` and
`blendin pair check` (pair_check.py) share all of this.

Exit codes carry the verdict: 0 worth it, 3 borderline, 4 not worth it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from statistics import mean

import numpy as np

WORTH_IT, BORDERLINE, NOT_WORTH_IT = 0, 3, 4
FAILING_RATE = 0.20  # the paper: pairs above about 20% intervention tend to fail
COMFORTABLE_RATE = 0.10
MIN_EXACT_COVERAGE = 50.0  # % of guide tokens with an exact base token
TOP_K = 10

# Gammas a suggestion is chosen from: two decimals are as fine as a user would type, and the
# ends are left out (gamma 0 never intervenes; 1 intervenes wherever the base is not certain).
GAMMA_GRID = tuple(round(0.01 * i, 2) for i in range(1, 100))


@dataclass(frozen=True)
class RateBand:
    """Intervention rates a suggested gamma aims for: `low`..`high`, as close to `aim` as the grid allows."""

    low: float
    high: float
    aim: float

    def holds(self, rate: float) -> bool:
        return self.low <= rate <= self.high


# Below 5% the guide is hardly asked; above 20% is where the paper's pairs failed. The aim sits in
# the lower half (the geometric middle of 5 and 20) because a re-run drifts upwards: guided text
# is text the base is less sure of than its own (docs/pair_check.md has the measurements).
TARGET_BAND = RateBand(low=0.05, high=0.20, aim=0.10)


def intervention_rate(answers: Sequence[Sequence[float]], gamma: float) -> float:
    """BlendIn's intervention rate at `gamma` over answers given as the base's top-1 probability at
    each step: the mean over answers of each answer's share of steps below gamma (the rate the
    verdict reads, GenerationResult.intervention_rate averaged; an empty answer counts 0)."""
    return rate_curve(answers, [gamma])[gamma]


def rate_curve(answers: Sequence[Sequence[float]], gammas: Sequence[float]) -> dict[float, float]:
    """`intervention_rate` at each of `gammas`, in one sort per answer."""
    if not answers:
        return {gamma: 0.0 for gamma in gammas}
    points = np.asarray(gammas, dtype=float)
    shares = np.zeros(len(points))
    for tops in answers:
        if len(tops):
            below = np.searchsorted(np.sort(np.asarray(tops, dtype=float)), points, side="left")
            shares += below / len(tops)
    return {gamma: float(share) for gamma, share in zip(gammas, shares / len(answers), strict=True)}


@dataclass(frozen=True)
class GammaSuggestion:
    gamma: float | None  # None: no gamma of the grid puts the rate in the band (`note` says why)
    implied_rate: float | None  # the rate at `gamma` on the pass it was read from
    note: str


def suggest_gamma(answers: Sequence[Sequence[float]], band: RateBand = TARGET_BAND) -> GammaSuggestion:
    """Of the gammas of GAMMA_GRID whose intervention rate on `answers` is in the band, the one
    whose rate is closest to `band.aim` (the smaller gamma on a tie: fewer interventions, less drift)."""
    if not any(len(tops) for tops in answers):
        return GammaSuggestion(None, None, "no tokens were measured")
    curve = rate_curve(answers, GAMMA_GRID)
    in_band = [g for g in GAMMA_GRID if band.holds(curve[g])]
    if not in_band:
        return GammaSuggestion(None, None, _out_of_band(curve, band))
    gamma = min(in_band, key=lambda g: (abs(curve[g] - band.aim), g))
    return GammaSuggestion(
        gamma, curve[gamma], f"{curve[gamma]:.1%} of tokens on this sample, aiming at {band.aim:.0%}"
    )


def _out_of_band(curve: Mapping[float, float], band: RateBand) -> str:
    """Why no gamma of the curve puts the rate in the band."""
    lowest, highest = GAMMA_GRID[0], GAMMA_GRID[-1]
    span = f"{band.low:.0%}-{band.high:.0%}"
    if curve[highest] < band.low:
        return (
            f"the base is sure of its top token almost everywhere: even at gamma {highest} BlendIn would"
            f" intervene on {curve[highest]:.1%} of tokens, below {span}; the guide would hardly be asked"
        )
    if curve[lowest] > band.high:
        return (
            f"the base is unsure almost everywhere: even at gamma {lowest} BlendIn would intervene on"
            f" {curve[lowest]:.1%} of tokens, above {span}"
        )
    below = max(g for g in GAMMA_GRID if curve[g] < band.low)
    above = min(g for g in GAMMA_GRID if curve[g] > band.high)
    return (
        f"the rate jumps past {span}: {curve[below]:.1%} at gamma {below}, {curve[above]:.1%} at gamma {above}"
        " (the base's top-1 probabilities bunch together there)"
    )


@dataclass(frozen=True)
class AnswerMeasures:
    """What the diagnostic reads of one method's answers (records as runner.sample_record writes them)."""

    n_answers: int
    rate: float
    guide_in_base_top_k: float | None  # at interventions
    mean_alpha: float | None
    base_top_ps: list[list[float]]  # per answer, the base's top-1 probability at each step

    @classmethod
    def of(cls, records: Sequence[dict]) -> AnswerMeasures:
        ranks = [k for r in records for k in r["guide_ranks"]]
        alphas = [a for r in records for a in r["alphas"]]
        return cls(
            n_answers=len(records),
            rate=mean(r["intervention_rate"] for r in records) if records else 0.0,
            guide_in_base_top_k=mean(k < TOP_K for k in ranks) if ranks else None,
            mean_alpha=mean(alphas) if alphas else None,
            base_top_ps=[[p for p in r["base_top_p"] if p is not None] for r in records],
        )


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str
    exit_code: int


def judge(exact_pct: float, rate: float, agreement: float | None) -> Verdict:
    """The verdict from the bridge's exact coverage (%), BlendIn's intervention rate and the
    share of interventions where the guide's top token was in the base's top TOP_K."""
    if exact_pct < MIN_EXACT_COVERAGE:
        return Verdict(
            "not worth it",
            f"only {exact_pct:.0f}% of the guide's tokens exist in the base vocabulary: its guidance mostly cannot be written",
            NOT_WORTH_IT,
        )
    if rate > FAILING_RATE:
        return Verdict(
            "not worth it",
            f"BlendIn intervened on {100 * rate:.0f}% of tokens: above the ~20% where the paper's pairs "
            "failed, a sign that the guidance confuses the base",
            NOT_WORTH_IT,
        )
    if rate > COMFORTABLE_RATE or (agreement is not None and agreement < 0.5):
        in_top_k = (
            f" and the guide's top token was in the base's top {TOP_K} at {100 * agreement:.0f}% of them"
            if agreement is not None
            else ""
        )
        return Verdict(
            "borderline",
            f"BlendIn intervened on {100 * rate:.0f}% of tokens{in_top_k}: check a larger sample before a long run",
            BORDERLINE,
        )
    return Verdict(
        "worth it",
        f"BlendIn intervened on {100 * rate:.0f}% of tokens, well below the ~20% where pairs tend to fail",
        WORTH_IT,
    )


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
    suggested_gamma: float | None
    suggested_gamma_note: str
    verdict: str
    reason: str
    exit_code: int

    def as_dict(self) -> dict:
        return asdict(self)


def judge_pair(coverage: dict, blendin: list[dict], nudging: list[dict]) -> Diagnosis:
    """The verdict from bridge coverage and per-answer records (see runner.sample_record). The
    suggested gamma is read from BlendIn's own pass at the gamma it ran with."""
    measured = AnswerMeasures.of(blendin)
    suggestion = suggest_gamma(measured.base_top_ps)
    verdict = judge(coverage["exact_pct"], measured.rate, measured.guide_in_base_top_k)
    return Diagnosis(
        exact_pct=coverage["exact_pct"],
        prefix_pct=coverage["prefix_pct"],
        unmapped_pct=coverage["unmapped_pct"],
        n_answers=measured.n_answers,
        blendin_rate=measured.rate,
        nudging_rate=mean(r["intervention_rate"] for r in nudging) if nudging else 0.0,
        guide_in_base_top_k=measured.guide_in_base_top_k,
        mean_alpha=measured.mean_alpha,
        suggested_gamma=suggestion.gamma,
        suggested_gamma_note=suggestion.note,
        verdict=verdict.verdict,
        reason=verdict.reason,
        exit_code=verdict.exit_code,
    )


# -- text shared by the commands that print a diagnosis ---------------------------------------------


def coverage_line(coverage: Mapping[str, float]) -> str:
    return (
        f"bridge: {coverage['exact_pct']:.1f}% exact, {coverage['prefix_pct']:.1f}% prefix,"
        f" {coverage['unmapped_pct']:.1f}% unmapped"
    )


def agreement_line(agreement: float | None, alpha: float | None) -> str:
    shown_agreement = "-" if agreement is None else f"{100 * agreement:.0f}%"
    shown_alpha = "-" if alpha is None else f"{alpha:.2f}"
    return (
        f"guide's top token in the base's top {TOP_K} at interventions: {shown_agreement}   mean alpha: {shown_alpha}"
    )


def suggestion_line(gamma: float | None, note: str) -> str:
    return f"suggested gamma: {'none' if gamma is None else gamma} ({note})"
