"""Speculative BlendIn side by side, and its cost model (bench.py --speculative K,K,...).

For each thread setup (the base's threads / the guide's), in one process, on the same prompts
with the method order rotated from prompt to prompt: the base alone, sequential BlendIn, and
BlendIn with `--speculative K` for each K. Every request starts from clean caches. Then, on the
same loaded models, the costs the model below is built from, each a median of repeated timings
at a context of some 100 tokens:

    c_g      the guide's cost for one token (a drafted token)
    c_b(n)   the base's cost for a batch of n tokens with logits at each (n = 1: one token)

The cost model predicts speculative BlendIn's speed from those costs and the acceptance the run
measured: a round drafts K guide tokens (K * c_g), which become m base tokens checked in one
batch (c_b(m + 1)), and commits tau tokens (the accepted ones plus the one decided at the first
difference), each also paying the engine's per-token work c_o outside the two models (the base's
softmax over its vocabulary, the blend, the bookkeeping):

    seconds per token = (K * c_g + c_b(m + 1)) / tau + c_o

c_o is measured on the sequential BlendIn run of the same setup (its wall time per token minus
the time inside the models' evaluations), tau and m on the speculative run. The prediction is
checked against the measured speed of every setup and K; docs/performance.md then puts other
pairs' published costs into the same formula.
"""

from __future__ import annotations

import statistics
import sys
from time import perf_counter

from bench_measure import reset_caches, set_threads

from blendin_local.backends.llama import LoadOptions
from blendin_local.engine.prompts import Message, prompt_tokens
from blendin_local.engine.settings import GenerationSettings
from blendin_local.engine.speculation import SpeculationStats
from blendin_local.pair import BlendPair

COST_CONTEXT = 100  # tokens of context before the timed evaluations
COST_REPEATS = 15
# A laptop pair the cost model is asked about: the base's cost for a batch of n tokens relative to
# one token, for LLaMA 7B Q4_0 on Apple Silicon with Metal, from llama-bench's pp1/pp2/pp4/pp8
# figures in https://github.com/ggml-org/llama.cpp/pull/3524 (82.15, 152.31, 195.84, 240.39
# tokens/s: n / rate, over 1 / 82.15). Small batches are nearly free where a model's weights,
# not its arithmetic, bound the time.
PUBLISHED_BATCH_FACTORS = {1: 1.0, 2: 1.08, 4: 1.68, 8: 2.73}
PROJECTED_RATIOS = (
    0.15,
    0.25,
)  # guide/base cost per token: 0.15 is the issue's, 0.25 what the figures in docs/performance.md give an 8B base and a 1B guide


class EvaluationTimer:
    """Seconds and calls inside each model's `logits` (wrapped on the instance, nothing else edited)."""

    def __init__(self, pair: BlendPair):
        self.seconds = {"base": 0.0, "guide": 0.0}
        self.calls = {"base": 0, "guide": 0}
        self._models = [pair.base, pair.guide]
        for role, model in zip(("base", "guide"), self._models, strict=True):
            model.logits = self._timed(role, model.logits)

    def _timed(self, role: str, original):
        def logits(tokens, n_last=1):
            started = perf_counter()
            try:
                return original(tokens, n_last)
            finally:
                self.seconds[role] += perf_counter() - started
                self.calls[role] += 1

        return logits

    @property
    def total(self) -> float:
        return self.seconds["base"] + self.seconds["guide"]

    def remove(self) -> None:
        for model in self._models:
            del model.logits


def costs(pair: BlendPair, prompt: str, batch_sizes: list[int]) -> dict:
    """c_g and c_b(n) at a context of about COST_CONTEXT tokens (module docstring)."""

    def context(model) -> list[int]:
        tokens = prompt_tokens(model, [Message("user", prompt)], "plain")
        filler = model.tokenize(b" and then some more words to make a context of a hundred tokens" * 12)
        return (tokens + filler)[:COST_CONTEXT]

    def timed(model, tokens: list[int], n: int) -> float:
        times = []
        model.logits(tokens[:-n])  # the context, cached once
        for _ in range(COST_REPEATS):
            model._truncate(len(tokens) - n)  # drop the timed tokens of the repeat before
            started = perf_counter()
            model.logits(tokens, n_last=n)
            times.append(perf_counter() - started)
        return statistics.median(times)

    reset_caches(pair)
    base_tokens, guide_tokens = context(pair.base), context(pair.guide)
    c_b = {n: timed(pair.base, base_tokens, n) for n in batch_sizes}
    c_g = timed(pair.guide, guide_tokens, 1)
    reset_caches(pair)
    return {"c_g": c_g, "c_b": c_b}


def run_one(pair: BlendPair, method: str, k: int, prompt: dict, max_tokens: int) -> dict:
    """One request from clean caches. Its decode phase (after the first token, which the prompts'
    evaluation dominates) is what the cost model predicts."""
    reset_caches(pair)
    settings = GenerationSettings(
        method=method, speculative=k, max_tokens=max_tokens, system=prompt["system"], stop_at_new_turn=False
    )
    timer = EvaluationTimer(pair)
    started = perf_counter()
    first: tuple[float, dict, dict] | None = None  # (wall, seconds and calls per model) at the first token
    try:
        generation = pair.start(prompt["question"], settings)
        for _ in generation.steps():
            if first is None:
                first = (perf_counter(), dict(timer.seconds), dict(timer.calls))
        result = generation.finish().result
    finally:
        timer.remove()
    ended = perf_counter()
    stats = SpeculationStats.of(result.speculation)
    first = first or (ended, dict(timer.seconds), dict(timer.calls))
    return {
        "method": method if not k else f"{method}+spec{k}",
        "prompt": prompt["id"],
        "n_tokens": result.n_tokens,
        "wall_s": ended - started,
        "decode_s": ended - first[0],
        "decode_model_s": timer.total - sum(first[1].values()),
        # in the decode phase, per model: seconds inside its evaluations, and their number
        "decode_base_s": timer.seconds["base"] - first[1]["base"],
        "decode_guide_s": timer.seconds["guide"] - first[1]["guide"],
        "decode_base_calls": timer.calls["base"] - first[2]["base"],
        "decode_guide_calls": timer.calls["guide"] - first[2]["guide"],
        "text": result.text,
        "speculation": stats.as_dict() if stats else None,
    }


def interpolated(table: dict[int, float], n: float) -> float:
    """table[n], linearly between the nearest sizes measured (and beyond the largest, along the
    last two)."""
    sizes = sorted(table)
    lower = max([s for s in sizes if s <= n], default=sizes[0])
    upper = min([s for s in sizes if s >= n], default=sizes[-1])
    if upper == lower:
        if n > sizes[-1] and len(sizes) > 1:
            lower, upper = sizes[-2], sizes[-1]
        else:
            return table[lower]
    return table[lower] + (n - lower) * (table[upper] - table[lower]) / (upper - lower)


def predict(c: dict, k: int, tau: float, drafted_per_round: float, c_o: float) -> float:
    """Seconds per token by the cost model (module docstring)."""
    return (k * c["c_g"] + interpolated(c["c_b"], drafted_per_round + 1)) / tau + c_o


def projected_speedup(ratio: float, factors: dict[int, float], k: int, tau: float, drafted_per_round: float) -> float:
    """The cost model's speed against the base alone for a pair whose guide costs `ratio` of a base
    token and whose base costs factors[n] tokens for a batch of n, at the acceptance measured here
    (tau tokens and m drafted per round). The engine's per-token work is left out: next to an 8B
    base's token (28 to 98 ms on the laptops in docs/performance.md) it is a few percent."""
    return 1.0 / ((k * ratio + interpolated(factors, drafted_per_round + 1)) / tau)


def bench_setup(pair: BlendPair, prompts: list[dict], ks: list[int], max_tokens: int, label: str) -> dict:
    rows = [("base", 0), ("blendin", 0), *(("blendin", k) for k in ks)]
    runs = []
    for i, prompt in enumerate(prompts):
        order = rows[i % len(rows) :] + rows[: i % len(rows)]
        for method, k in order:
            r = run_one(pair, method, k, prompt, max_tokens)
            runs.append(r)
            print(
                f"[{label}, prompt {i + 1}/{len(prompts)}] {r['method']:14} {r['n_tokens']:4} tokens"
                f" {r['n_tokens'] / r['wall_s']:6.1f} tok/s",
                file=sys.stderr,
            )
    c = costs(pair, prompts[0]["question"], sorted({1, 2, *(k + 1 for k in ks), *(2 * k + 1 for k in ks)}))
    by = {}
    for r in runs:
        by.setdefault(r["method"], []).append(r)
    base_tps = {r["prompt"]: r["n_tokens"] / r["wall_s"] for r in by["base"]}
    seq = by["blendin"]
    c_o = sum(r["decode_s"] - r["decode_model_s"] for r in seq) / sum(r["n_tokens"] - 1 for r in seq)
    summary = {}
    for name, rs in by.items():
        tokens, decode = sum(r["n_tokens"] for r in rs), sum(r["decode_s"] for r in rs)
        row = {
            "tokens_per_s_median": statistics.median(r["n_tokens"] / r["wall_s"] for r in rs),
            "decode_tokens_per_s": sum(r["n_tokens"] - 1 for r in rs) / decode,
            "vs_base_median": statistics.median(r["n_tokens"] / r["wall_s"] / base_tps[r["prompt"]] for r in rs),
        }
        decode_tokens = sum(r["n_tokens"] - 1 for r in rs)
        row |= {
            f"{role}_ms_per_token": 1e3 * sum(r[f"decode_{role}_s"] for r in rs) / decode_tokens
            for role in ("base", "guide")
        }
        specs = [r["speculation"] for r in rs if r["speculation"]]
        if specs:
            k = int(name.rsplit("spec", 1)[1])
            rounds = sum(s["rounds"] for s in specs)
            drafted, accepted = sum(s["drafted"] for s in specs), sum(s["accepted"] for s in specs)
            tau, m = tokens / rounds, drafted / rounds
            predicted = 1.0 / predict(c, k, tau, m, c_o)
            row |= {  # the model's two terms, per token, to set against the measured ones above
                "predicted_base_ms_per_token": 1e3 * interpolated(c["c_b"], m + 1) / tau,
                "predicted_guide_ms_per_token": 1e3 * k * c["c_g"] / tau,
            }
            row |= {
                "acceptance": accepted / drafted if drafted else 0.0,
                "accepted_per_round": accepted / rounds,
                "tokens_per_round": tau,
                "drafted_per_round": m,
                "predicted_tokens_per_s": predicted,
                "prediction_error": predicted / row["decode_tokens_per_s"] - 1.0,
                "projected_speedup": {
                    f"{ratio:g} {where}": projected_speedup(ratio, factors, k, tau, m)
                    for ratio in PROJECTED_RATIOS
                    for where, factors in (
                        ("published batch costs", PUBLISHED_BATCH_FACTORS),
                        ("batch costs measured here", {n: t / c["c_b"][1] for n, t in c["c_b"].items()}),
                    )
                },
                "same_text_as_sequential": sum(
                    r["text"] == s["text"] for r, s in zip(sorted(rs, key=_key), sorted(seq, key=_key), strict=True)
                ),
            }
        summary[name] = row
    return {"label": label, "costs": c, "c_o": c_o, "summary": summary, "runs": runs}


def _key(r: dict) -> str:
    return r["prompt"]


def report_md(setups: list[dict], ks: list[int]) -> str:
    lines = []
    for s in setups:
        c = s["costs"]
        lines += [
            f"### {s['label']}",
            "",
            f"Costs: guide {1e3 * c['c_g']:.2f} ms per token; base "
            + ", ".join(f"{n} token{'s' if n > 1 else ''} {1e3 * t:.2f} ms" for n, t in sorted(c["c_b"].items()))
            + f"; engine work per token outside the models c_o {1e3 * s['c_o']:.2f} ms;"
            f" guide/base cost ratio {c['c_g'] / c['c_b'][1]:.2f}.",
            "",
            "| method | tokens/s median | vs base (median of per-prompt ratios) | decode tokens/s | acceptance"
            " | accepted per round | tokens per round | predicted decode tokens/s | prediction error"
            " | texts as sequential |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        n_prompts = sum(r["method"] == "base" for r in s["runs"])
        for name, row in s["summary"].items():
            if "acceptance" in row:
                extra = (
                    f"{100 * row['acceptance']:.1f}% | {row['accepted_per_round']:.2f} | {row['tokens_per_round']:.2f}"
                    f" | {row['predicted_tokens_per_s']:.1f} | {100 * row['prediction_error']:+.1f}%"
                    f" | {row['same_text_as_sequential']}/{n_prompts}"
                )
            else:
                extra = "- | - | - | - | - | -"
            lines.append(
                f"| {name} | {row['tokens_per_s_median']:.1f} | {row['vs_base_median']:.2f}x"
                f" | {row['decode_tokens_per_s']:.1f} | {extra} |"
            )
        lines.append("")
        projections = [
            (name, row["projected_speedup"]) for name, row in s["summary"].items() if "projected_speedup" in row
        ]
        if projections:
            columns = list(projections[0][1])
            lines += [
                "Projected speed against the base alone, at the acceptance measured above, for a guide that"
                " costs the given share of a base token:",
                "",
                "| method | " + " | ".join(columns) + " |",
                "|---|" + "---:|" * len(columns),
                *(f"| {name} | " + " | ".join(f"{p[c]:.2f}x" for c in columns) + " |" for name, p in projections),
                "",
            ]
    return "\n".join(lines)


def speculation_bench(args, prompts: list[dict]) -> dict:
    ks = [int(k) for k in args.speculative.split(",") if k]
    setups = []
    # One pair for every setup: each model's thread count is set on its context, as bench.py's
    # thread split does (the two never run at once).
    pair = BlendPair.load(args.base, args.guide, options=LoadOptions(n_ctx=args.ctx))
    try:
        for threads in args.speculative_threads.split(","):
            base_threads, guide_threads = (int(t) for t in threads.split("/"))
            set_threads(pair.base, base_threads)
            set_threads(pair.guide, guide_threads)
            label = f"base {base_threads} thread{'s' if base_threads > 1 else ''}, guide {guide_threads}"
            setups.append(bench_setup(pair, prompts, ks, args.max_tokens, label))
    finally:
        pair.close()
    return {"ks": ks, "setups": setups, "md": report_md(setups, ks)}
