"""Running one dataset with several methods into a run folder, resumably, with live progress.

Samples go item by item, each item through every method, so an interrupted run has every
method at the same depth. Each finished sample is scored (and judged, with a judge) and
written at once; Ctrl-C loses only the samples in flight.

`jobs` > 1 runs samples on that many pairs at once, each with its share of the CPU threads
(llama.cpp releases the GIL while it computes). On 2 cores, two single-threaded pairs beat one
two-threaded pair by about 1.1x once answers are long enough to hide the second load (measured
in docs/results.md).
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

from tqdm import tqdm

from blendin_local.engine.likelihood import forced_logprob
from blendin_local.engine.prompts import Message
from blendin_local.engine.settings import GenerationSettings
from blendin_local.engine.speculation import SpeculationStats
from blendin_local.eval.datasets import EvalItem
from blendin_local.eval.judge import Judge
from blendin_local.eval.scoring import score_item
from blendin_local.eval.variants import parse_variant

LOGLIK_PREFIX = "Answer:"  # forced before each option, not scored: the answer form of the base's prompt
LOGLIK_METHODS = ("base", "guide", "blendin", "ensemble", "proxy")  # Nudging has no token distribution


def option_loglik(pair, messages: list[Message], item: EvalItem, settings: GenerationSettings) -> dict:
    """The option the method finds most likely, by log-probability per byte of " {option}"."""
    scores = []
    for choice in item.choices:
        text = " " + choice
        logprob = forced_logprob(pair.start(messages, settings), LOGLIK_PREFIX, text)
        scores.append(round(logprob / len(text.encode("utf-8")), 5))
    choice = chr(ord("A") + max(range(len(scores)), key=scores.__getitem__))
    return {"choice": choice, "correct": choice == item.gold, "per_byte": scores}


def sample_record(
    item: EvalItem, method: str, result, scoring: dict, judged: dict | None, seconds: float, loglik: dict | None = None
) -> dict:
    alphas = [round(e.alpha, 4) for e in result.trace if e.alpha is not None]
    ranks = [e.guide_rank for e in result.trace if e.guide_rank is not None]
    return {
        "id": item.id,
        "method": method,
        "base": result.base,  # the models' display names (general.name and quant), for the report
        "guide": result.guide,
        "question": item.question,
        "output": result.text,
        "score": scoring.get("score"),
        "scoring": {k: v for k, v in scoring.items() if k != "score"},
        "judge": judged,
        "loglik": loglik,
        "stop_reason": result.stop_reason,
        "n_tokens": result.n_tokens,
        "n_interventions": result.n_interventions,
        "intervention_rate": result.intervention_rate,
        "alpha_mean": result.alpha_mean,
        "alphas": alphas,
        "guide_ranks": ranks,
        "base_top_p": [None if e.base_top_p is None else round(e.base_top_p, 4) for e in result.trace],
        "intervened": [i for i, e in enumerate(result.trace) if e.source != "base"],
        # The ending trigger's checks (eval/ending_sweep.py derives every threshold's answer from them).
        "end_checks": [[c.tokens, c.chars, round(c.probability, 6)] for c in result.end_checks],
        **({"speculation": stats.as_dict()} if (stats := SpeculationStats.of(result.speculation)) else {}),
        "tokens_per_s": result.tokens_per_s,
        "seconds": round(seconds, 3),
    }


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class LiveStats:
    """Running score and intervention rate per method, for the progress bar."""

    scores: dict[str, list[float]] = field(default_factory=dict)
    rates: dict[str, list[float]] = field(default_factory=dict)

    def add(self, record: dict) -> None:
        """Count a record; a resumed folder's record of the wrong shape is left out of the bar
        (the report names it)."""
        method, score, rate = record.get("method"), record.get("score"), record.get("intervention_rate")
        if not isinstance(method, str) or not _is_number(rate) or not (score is None or _is_number(score)):
            return
        if score is not None:
            self.scores.setdefault(method, []).append(score)
        self.rates.setdefault(method, []).append(rate)

    def summary(self) -> str:
        parts = []
        for method, rates in self.rates.items():
            scores = self.scores.get(method, [])
            score = f"{sum(scores) / len(scores):.2f}" if scores else "-"
            parts.append(f"{method} {score} ({100 * sum(rates) / len(rates):.0f}%)")
        return " | ".join(parts)


class RunRecords(Protocol):
    """Where finished samples go: a run folder (runs.RunFolder), or memory for a diagnosis."""

    config: dict[str, Any]
    earlier: list[dict]

    def is_done(self, method: str, sample_id: str) -> bool: ...

    def append(self, method: str, record: dict) -> None: ...


def run_samples(
    pairs: Sequence,
    items: Sequence[EvalItem],
    methods: Sequence[str],
    common: dict,
    folder: RunRecords,
    judge: Judge | None = None,
    on_record: Callable[[dict], None] | None = None,
    progress: bool = True,
    loglik: bool = False,
) -> int:
    """Run every (item, method) not yet in the folder; returns how many were run. With `loglik`,
    multiple-choice items are also scored by option log-likelihood."""
    todo = [(item, method) for item in items for method in methods if not folder.is_done(method, item.id)]
    settings = {}
    for name in methods:
        method, overrides = parse_variant(name)
        settings[name] = GenerationSettings.checked(**{**common, **overrides, "method": method})
    stats = LiveStats()
    for record in folder.earlier:
        stats.add(record)
    bar = tqdm(
        total=len(items) * len(methods),
        initial=len(items) * len(methods) - len(todo),
        desc=folder.config["dataset"],
        unit="sample",
        disable=not progress,
        dynamic_ncols=True,
    )
    free: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for pair in pairs:
        free.put(pair)

    def one(item: EvalItem, method: str) -> dict:
        pair = free.get()
        try:
            started = time.perf_counter()
            messages = [Message("system", item.system), Message("user", item.question)]
            result = pair.generate(messages, settings[method])
            scoring = score_item(item, result.text)
            judged = judge.grade(item, result.text) if judge else None
            by_likelihood = (
                option_loglik(pair, messages, item, settings[method])
                if loglik and item.choices and settings[method].method in LOGLIK_METHODS
                else None
            )
            return sample_record(item, method, result, scoring, judged, time.perf_counter() - started, by_likelihood)
        finally:
            free.put(pair)

    def finish(record: dict) -> None:
        folder.append(record["method"], record)
        stats.add(record)
        bar.update(1)
        bar.set_postfix_str(stats.summary(), refresh=False)
        if on_record:
            on_record(record)

    try:
        if len(pairs) == 1:
            for item, method in todo:
                finish(one(item, method))
        else:
            with ThreadPoolExecutor(len(pairs)) as pool:
                pending: set[Future[dict]] = set()
                failed: list[BaseException] = []

                def settle(done) -> None:
                    # Every sample that finished is saved, even when another one failed (a server
                    # gone mid-run): the first error is raised once the samples in flight are in.
                    for future in done:
                        if future.exception() is None:
                            finish(future.result())
                        elif not failed:
                            failed.append(future.exception())

                for item, method in todo:
                    if len(pending) >= len(pairs):
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        settle(done)
                        if failed:
                            break
                    pending.add(pool.submit(one, item, method))
                settle(wait(pending).done)
                if failed:
                    raise failed[0]
    finally:
        bar.close()
    return len(todo)
