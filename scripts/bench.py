#!/usr/bin/env python
"""Side-by-side benchmark of every decoding method on one pair, in ONE process, interleaved.

    python scripts/bench.py -t 1 --out docs/perf/bench.json --md docs/perf/bench.md
    python scripts/bench.py -t 1 --scaling --out docs/perf/scaling.json --md docs/perf/scaling.md
    python scripts/bench.py -t 2 --split-prompts 6 ...                # also every thread split between the models
    python scripts/bench.py --smoke --out /tmp/smoke.json          # CI: checks that it runs, never its numbers
    python scripts/bench.py --compare old.json new.json              # are the generated texts byte-identical?

What one run measures (all methods on the same prompts, the method order rotated from prompt to
prompt so that machine noise hits every method alike):

- methods: base, guide, nudging, blendin (auto alpha, gamma 0.4), ensemble, and `reference`: a
  reference-style BlendIn that works the way the paper's code does through a server: both caches
  cleared at every token (the whole prompt and response re-evaluated), the two top-100 lists
  blended by decoded token string, auto alpha, gamma 0.4;
- tokens/s per request (median and spread over prompts), per-token latency p50/p95, time to first
  token, intervention rate, and where the time goes: every llama_decode call and the engine's
  functions are wrapped with timers from here (nothing in the package is edited), each timer
  counting its own time minus that of the timers nested inside it;
- peak RSS of a fresh process that loads the pair and runs BlendIn, phase by phase, against the
  two GGUF files plus their KV caches (computed from the GGUF metadata at the n_ctx used);
- in child processes: cold start (both models and the cached bridge) and building the bridge
  from scratch; with --scaling, tokens/s against output length, latency against context length
  and memory against n_ctx; with --split-prompts, base-only and BlendIn under every split of
  threads between the two models.

Every request starts from clean KV caches, so each generated text is what a fresh process
would write and runs can be compared text by text (--compare).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from time import perf_counter

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import llama_cpp  # noqa: E402
import llama_cpp.llama_cpp as llama  # noqa: E402

from blendin_local.engine import base_cursor  # noqa: E402

from blendin_local.engine import blending  # noqa: E402

from blendin_local.engine import bridge  # noqa: E402

from blendin_local.engine import generation  # noqa: E402

from blendin_local.engine import guide_cursor  # noqa: E402

from blendin_local.engine import methods  # noqa: E402
from blendin_local.engine.byte_tokens import tokens_for_bytes  # noqa: E402
from blendin_local.engine.generation import Finished, GenerationSettings  # noqa: E402
from blendin_local.backends.llama import LlamaModel, LoadOptions, default_threads  # noqa: E402
from blendin_local.backends.registry import DEFAULT_PAIR, load_registry, resolve_model, resolve_pair  # noqa: E402
from blendin_local.pair import BlendPair, as_messages, load_bridge, vocabulary  # noqa: E402
from blendin_local.engine.prompts import prompt_tokens  # noqa: E402

METHODS = ("base", "guide", "nudging", "blendin", "ensemble", "reference")
DATASETS = ("gsm8k", "arc_easy", "truthfulqa", "xstest", "ifeval", "justeval")
PROMPT_SEED = 7  # the benchmark's own draw, not the evaluation's subset

# Roll-up of the exclusive timers into the five parts.
ROLLUP = {
    "base forward": "base forward",
    "guide forward": "guide forward",
    "guide softmax": "bridge + blend math",
    "projection": "bridge + blend math",
    "proposal": "bridge + blend math",
    "blend": "bridge + blend math",
    "blend: dense mixture": "bridge + blend math",
    "rank": "bridge + blend math",
    "reference top-k + string blend": "bridge + blend math",
    "tokenize": "tokenization/sync",
    "cursor sync": "tokenization/sync",
    "logits readout": "the rest",
    "base softmax": "the rest",
    "sampling": "the rest",
}
PARTS = ("base forward", "guide forward", "bridge + blend math", "tokenization/sync", "the rest")


# -- timers ------------------------------------------------------------------------------------


class Profiler:
    """Exclusive wall time per category, from wrappers installed around functions."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, int] = defaultdict(int)  # tokens evaluated, by model
        self._stack: list[float] = []
        self._patches: list[tuple[object, str, object]] = []

    def wrap(self, owner, name: str, category) -> None:
        original = owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            return
        stack, totals, calls = self._stack, self.totals, self.calls
        fixed = isinstance(category, str)

        def timed(*args, **kwargs):
            stack.append(0.0)
            t0 = perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                dt = perf_counter() - t0
                child = stack.pop()
                cat = category if fixed else category(args)
                totals[cat] += dt - child
                calls[cat] += 1
                if stack:
                    stack[-1] += dt

        setattr(owner, name, timed)
        self._patches.append((owner, name, original))

    def install(self, pair: BlendPair) -> None:
        roles = {pair.base._ctx: "base forward", pair.guide._ctx: "guide forward"}
        tokens = self.tokens

        def decode_role(args):
            role = roles.get(args[0], "other forward")
            tokens[role] += args[1].n_tokens
            return role
        self.wrap(llama, "llama_decode", decode_role)
        self.wrap(LlamaModel, "logits", "logits readout")
        self.wrap(LlamaModel, "tokenize", "tokenize")
        self.wrap(LlamaModel, "begin_request", "cursor sync")
        self.wrap(base_cursor, "softmax", "base softmax")
        self.wrap(base_cursor.BaseCursor, "probs", "base softmax")  # masking and max, outside its softmax
        for name in ("push_token", "push_bytes", "_settle"):
            self.wrap(base_cursor.BaseCursor, name, "cursor sync")
        self.wrap(guide_cursor, "softmax", "guide softmax")
        self.wrap(methods, "softmax", "guide softmax")  # Nudging's drafts
        for name in ("_plain", "_healed"):
            self.wrap(guide_cursor.GuideCursor, name, "proposal")
        for name in ("_resolve", "commit", "take"):
            self.wrap(guide_cursor.GuideCursor, name, "cursor sync")
        self.wrap(bridge.VocabBridge, "project", "projection")
        self.wrap(bridge.VocabBridge, "project_sparse", "projection")
        self.wrap(methods, "blend", "blend")  # auto alpha and the (lazy) mixture
        self.wrap(blending.Mixture, "argmax", "blend")
        self.wrap(blending.Mixture, "dense", "blend: dense mixture")
        self.wrap(methods, "proxy_tune", "blend")
        self.wrap(methods, "rank_in", "rank")
        self.wrap(methods, "choose", "sampling")
        self.wrap(methods, "guide_choosable", "sampling")
        self.wrap(generation.Generation, "commit", "cursor sync")

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches.clear()

    def snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        calls = dict(self.calls)
        calls.update({f"tokens evaluated: {k}": v for k, v in self.tokens.items()})
        return dict(self.totals), calls

    @staticmethod
    def wrapper_cost(n: int = 200_000) -> float:
        """Seconds one timer adds to a call (measured on a no-op), to correct the breakdown."""
        class Owner:
            @staticmethod
            def f():
                return None
        p = Profiler()
        plain = Owner.f
        t0 = perf_counter()
        for _ in range(n):
            plain()
        bare = perf_counter() - t0
        p.wrap(Owner, "f", "x")
        wrapped = Owner.f
        t0 = perf_counter()
        for _ in range(n):
            wrapped()
        return max(0.0, (perf_counter() - t0 - bare) / n)


# -- the reference-style baseline -------------------------------------------------------------


class ReferenceBlendIn:
    """BlendIn the way the paper's code runs it through OpenAI-compatible servers.

    At every token: each model's cache is cleared and its whole prompt + response re-evaluated
    (the server gets the full text again), only the top-100 log-probabilities are read, and the
    two lists are blended over the union of their decoded token strings (a string missing from
    one list counts 0 there). Auto alpha; intervene when the base's top-1 probability < gamma.
    A string that appears twice in one list keeps its most probable entry (a JSON object keyed by
    token string holds one). Special tokens are keyed by their special text, as a server prints
    them; the answer ends where an end-of-generation token wins.
    """

    def __init__(self, pair: BlendPair, profiler: Profiler | None, gamma: float = 0.4, top: int = 100):
        self.pair, self.profiler, self.gamma, self.top = pair, profiler, gamma, top

    def _timed(self, category: str, fn, *args):
        if self.profiler is None:
            return fn(*args)
        stack, t0 = self.profiler._stack, perf_counter()
        stack.append(0.0)
        try:
            return fn(*args)
        finally:
            dt = perf_counter() - t0
            child = stack.pop()
            self.profiler.totals[category] += dt - child
            self.profiler.calls[category] += 1
            if stack:
                stack[-1] += dt

    def _top_list(self, model: LlamaModel, tokens: list[int]) -> dict[str, tuple[float, int]]:
        model._truncate(0)  # no KV cache reuse: the whole text is evaluated again
        model._prompt_len = 0
        logits = model.logits(tokens)[0].astype(np.float64)
        return self._timed("reference top-k + string blend", self._top_from_logits, model, logits)

    def _top_from_logits(self, model: LlamaModel, logits: np.ndarray) -> dict[str, tuple[float, int]]:
        logp = logits - logits.max()
        logp -= np.log(np.exp(logp).sum())
        ids = np.argpartition(-logp, self.top)[:self.top]
        ids = ids[np.argsort(-logp[ids], kind="stable")]
        out: dict[str, tuple[float, int]] = {}
        for t in ids.tolist():
            piece = model.pieces[t] or model.token_bytes(t, special=True)
            key = piece.decode("utf-8", "replace")
            if key not in out:
                out[key] = (float(np.exp(logp[t])), t)
        return out

    def _tokens(self, model: LlamaModel, prompt: list[int], response: bytes) -> list[int]:
        return prompt + self._timed("tokenize", tokens_for_bytes, model.tokenize, model.pieces,
                                    self.pair.bridge.base_prefix if model is self.pair.base else self.pair.bridge.guide_prefix,
                                    response)

    def stream(self, question: str, system: str | None, max_tokens: int):
        """Yields (piece, intervened) per token, then None."""
        pair = self.pair
        messages = as_messages(question, system)
        base_prompt = prompt_tokens(pair.base, messages, "plain")
        guide_prompt = prompt_tokens(pair.guide, messages, "chat")
        response = b""
        for _ in range(max_tokens):
            base_top = self._top_list(pair.base, self._tokens(pair.base, base_prompt, response))
            pb_max = max(p for p, _ in base_top.values())
            intervened = pb_max < self.gamma
            if not intervened:
                key = max(base_top, key=lambda k: base_top[k][0])
                owner, token = pair.base, base_top[key][1]
            else:
                guide_top = self._top_list(pair.guide, self._tokens(pair.guide, guide_prompt, response))
                key, owner, token = self._timed("reference top-k + string blend", self._blend, base_top, guide_top, pb_max)
            if token in owner.eog_ids:
                break
            response += owner.pieces[token]
            yield owner.pieces[token], intervened
        yield None

    def _blend(self, base_top, guide_top, pb_max):
        pg_key = max(guide_top, key=lambda k: guide_top[k][0])
        pg_max = guide_top[pg_key][0]
        alpha = pg_max / (pb_max + pg_max) + 0.1 * base_top.get(pg_key, (0.0, -1))[0]
        alpha = min(1.0, max(0.0, alpha))
        scores = {}
        for key in base_top.keys() | guide_top.keys():
            scores[key] = alpha * guide_top.get(key, (0.0, -1))[0] + (1 - alpha) * base_top.get(key, (0.0, -1))[0]
        best = max(sorted(scores), key=lambda k: scores[k])
        if best in base_top:
            return best, self.pair.base, base_top[best][1]
        return best, self.pair.guide, guide_top[best][1]


# -- prompts, requests -------------------------------------------------------------------------


def load_prompts(data_dir: Path, n: int) -> list[dict]:
    from blendin_local.eval.datasets import load_dataset, sample_items

    per = -(-n // len(DATASETS))
    items = []
    for name in DATASETS:
        items += sample_items(load_dataset(name, data_dir), per, seed=PROMPT_SEED)
    # round-robin over the datasets, so that a short run still mixes them
    by_set = defaultdict(list)
    for it in items:
        by_set[it.dataset].append(it)
    ordered = [by_set[d][i] for i in range(per) for d in DATASETS if i < len(by_set[d])]
    return [{"id": it.id, "question": it.question, "system": it.system} for it in ordered[:n]]


def reset_caches(pair: BlendPair) -> None:
    for model in (pair.base, pair.guide):
        model._truncate(0)
        model._prompt_len = 0


def run_request(pair: BlendPair, method: str, prompt: dict, max_tokens: int, profiler: Profiler | None,
                turn_stops: bool, per_token_profile: bool = False) -> dict:
    reset_caches(pair)
    before = profiler.snapshot() if profiler else ({}, {})
    stamps, pieces, interventions = [], [], 0
    forward_at = []  # cumulative forward seconds at each token (scaling runs)
    t0 = perf_counter()
    if method == "reference":
        for item in ReferenceBlendIn(pair, profiler).stream(prompt["question"], prompt["system"], max_tokens):
            now = perf_counter()
            if item is None:
                break
            stamps.append(now)
            pieces.append(item[0])
            interventions += item[1]
            if per_token_profile and profiler:
                forward_at.append(profiler.totals["base forward"] + profiler.totals["guide forward"])
        t_end = perf_counter()
        text = b"".join(pieces).decode("utf-8", "replace")
        n_tokens, stop = len(pieces), "eos" if len(pieces) < max_tokens else "length"
    else:
        settings = GenerationSettings(method=method, max_tokens=max_tokens, system=prompt["system"],
                                      stop_at_new_turn=turn_stops)
        result = None
        for event in pair.stream(prompt["question"], settings):
            now = perf_counter()
            if isinstance(event, Finished):
                result = event.result
                break
            stamps.append(now)
            if per_token_profile and profiler:
                forward_at.append(profiler.totals["base forward"] + profiler.totals["guide forward"])
        t_end = perf_counter()
        text, n_tokens, stop = result.text, result.n_tokens, result.stop_reason
        interventions = result.n_interventions
    wall = t_end - t0
    after = profiler.snapshot() if profiler else ({}, {})
    times = {k: v - before[0].get(k, 0.0) for k, v in after[0].items() if v - before[0].get(k, 0.0) > 0}
    calls = {k: v - before[1].get(k, 0) for k, v in after[1].items() if v - before[1].get(k, 0) > 0}
    out = {
        "method": method, "prompt": prompt["id"], "text": text, "n_tokens": n_tokens, "stop": stop,
        "interventions": interventions, "wall_s": wall,
        "ttft_s": stamps[0] - t0 if stamps else None,
        "gaps_s": [b - a for a, b in zip(stamps, stamps[1:])],
        "times": times, "calls": calls,
    }
    if per_token_profile:
        out["token_at_s"] = [s - t0 for s in stamps]
        base_fwd0 = before[0].get("base forward", 0.0) + before[0].get("guide forward", 0.0)
        out["forward_at_s"] = [f - base_fwd0 for f in forward_at]
    return out


# -- statistics --------------------------------------------------------------------------------


def pct(values, q):
    return float(np.percentile(values, q)) if len(values) else float("nan")


def summarize(runs: list[dict], wrapper_cost: float) -> dict:
    by_method = defaultdict(list)
    for r in runs:
        by_method[r["method"]].append(r)
    summary = {}
    for method, rs in by_method.items():
        tps = [r["n_tokens"] / r["wall_s"] for r in rs if r["n_tokens"]]
        gaps = [g for r in rs for g in r["gaps_s"]]
        ttft = [r["ttft_s"] for r in rs if r["ttft_s"] is not None]
        n_tok = sum(r["n_tokens"] for r in rs)
        wall = sum(r["wall_s"] for r in rs)
        times, calls = defaultdict(float), defaultdict(int)
        for r in rs:
            for k, v in r["times"].items():
                times[k] += v
            for k, v in r["calls"].items():
                calls[k] += v
        n_wrapped = sum(v for k, v in calls.items() if not k.startswith("tokens evaluated"))
        instr = n_wrapped * wrapper_cost
        parts = {p: 0.0 for p in PARTS}
        for k, v in times.items():
            parts[ROLLUP.get(k, "the rest")] += v
        accounted = sum(parts.values()) - parts["the rest"]
        parts["the rest"] = wall - accounted - instr
        parts["instrumentation (estimated)"] = instr
        n_int = sum(r["interventions"] for r in rs)
        summary[method] = {
            "requests": len(rs),
            "tokens": n_tok,
            "wall_s": wall,
            "tokens_per_s_aggregate": n_tok / wall if wall else 0.0,
            "decode_tokens_per_s_aggregate": len(gaps) / sum(gaps) if gaps else 0.0,
            "tokens_per_s_median": statistics.median(tps) if tps else 0.0,
            "tokens_per_s_p10": pct(tps, 10), "tokens_per_s_p90": pct(tps, 90),
            "tokens_per_s_min": min(tps) if tps else 0.0, "tokens_per_s_max": max(tps) if tps else 0.0,
            "latency_p50_ms": 1e3 * pct(gaps, 50), "latency_p95_ms": 1e3 * pct(gaps, 95),
            "ttft_median_ms": 1e3 * statistics.median(ttft) if ttft else float("nan"),
            "ttft_p95_ms": 1e3 * pct(ttft, 95),
            "interventions": n_int,
            "intervention_rate": n_int / n_tok if n_tok else 0.0,
            "parts_s": parts,
            "detail_s": dict(sorted(times.items(), key=lambda kv: -kv[1])),
            "calls": dict(calls),
            "engine_overhead_share": (wall - parts["base forward"] - parts["guide forward"] - instr) / wall if wall else 0.0,
            "engine_overhead_share_raw": (wall - parts["base forward"] - parts["guide forward"]) / wall if wall else 0.0,
            "blend_math_ms_per_intervention": 1e3 * parts["bridge + blend math"] / n_int if n_int else None,
            "base_tokens_evaluated_per_token": calls.get("tokens evaluated: base forward", 0) / n_tok if n_tok else 0.0,
            "guide_tokens_evaluated_per_token": calls.get("tokens evaluated: guide forward", 0) / n_tok if n_tok else 0.0,
            "dense_mixtures": calls.get("blend: dense mixture", 0),
        }
    return summary


def paired_ratio(runs: list[dict], a: str, b: str, decode: bool = False) -> dict:
    """Per prompt, a's tokens/s over b's: end to end, or after the first token (`decode`)."""
    if decode:
        tps = {(r["method"], r["prompt"]): len(r["gaps_s"]) / sum(r["gaps_s"]) for r in runs if r["gaps_s"]}
    else:
        tps = {(r["method"], r["prompt"]): r["n_tokens"] / r["wall_s"] for r in runs if r["n_tokens"]}
    ratios = [tps[(a, p)] / tps[(b, p)] for (m, p) in tps if m == a and (b, p) in tps]
    return {"median": statistics.median(ratios) if ratios else float("nan"),
            "p10": pct(ratios, 10), "p90": pct(ratios, 90), "n": len(ratios)}


# -- memory ------------------------------------------------------------------------------------


def kv_bytes(model: LlamaModel) -> int:
    """K and V cache size at the model's n_ctx: every layer full size (swa_full), F16."""
    arch = model.metadata("general.architecture")
    meta = lambda key: model.metadata(f"{arch}.{key}")  # noqa: E731
    n_layer = int(meta("block_count"))
    n_head = int(meta("attention.head_count"))
    n_head_kv = int(meta("attention.head_count_kv") or n_head)
    n_embd = int(meta("embedding_length"))
    k_len = int(meta("attention.key_length") or n_embd // n_head)
    v_len = int(meta("attention.value_length") or n_embd // n_head)
    return model.n_ctx * n_layer * n_head_kv * (k_len + v_len) * 2


def _status_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """The peak RSS of this process image. VmHWM, not getrusage: on Linux ru_maxrss survives
    exec, so a child started from a large parent reports the parent's peak (a child of this
    benchmark read 734 MiB where its own peak was 549)."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB


def current_rss_bytes() -> int:
    return 1024 * (_status_kib("VmRSS") or 0)


def rss_split() -> dict:
    """Resident memory now, split into anonymous (heap, buffers) and file-backed (mapped GGUF
    files, shared libraries) pages."""
    return {k: 1024 * (_status_kib(k) or 0) for k in ("VmRSS", "RssAnon", "RssFile")}


def memory_report(pair: BlendPair) -> dict:
    files = {m.name: m.path.stat().st_size for m in (pair.base, pair.guide)}
    kv = {m.name: kv_bytes(m) for m in (pair.base, pair.guide)}
    budget = sum(files.values()) + sum(kv.values())
    peak = peak_rss_bytes()
    return {"gguf_bytes": files, "kv_bytes": kv, "files_plus_kv": budget, "peak_rss": peak,
            "peak_over_files_plus_kv": peak / budget, "n_ctx": pair.base.n_ctx}


# -- child processes: cold start, bridge, memory against n_ctx ---------------------------------


def child_main(args) -> None:
    """Run inside a fresh interpreter; prints one JSON object."""
    out = {}
    t0 = perf_counter()
    options = LoadOptions(n_ctx=args.ctx, n_threads=args.threads)
    if args.child == "cold":
        pair = BlendPair.load(args.base, args.guide, options=options)
        out["load_s"] = perf_counter() - t0
        t1 = perf_counter()
        bridge.VocabBridge.build(vocabulary(pair.base), vocabulary(pair.guide), base_tokenize=pair.base.tokenize,
                                 guide_tokenize=pair.guide.tokenize, cache_dir=None)
        out["bridge_scratch_s"] = perf_counter() - t1
        t1 = perf_counter()
        LlamaModel(pair.base.path, options).close()
        out["base_model_load_s"] = perf_counter() - t1
        t1 = perf_counter()
        LlamaModel(pair.guide.path, options).close()
        out["guide_model_load_s"] = perf_counter() - t1
    elif args.child == "memory":
        # What a `blendin generate` process holds, phase by phase: the interpreter and libraries,
        # each model (weights mapped, llama.cpp's tokenizer tables, repacked weights, KV cache,
        # compute buffers, our piece table), the bridge, then BlendIn on two prompts.
        phases = {"imports": rss_split()}
        registry = load_registry()
        default_base, default_guide = resolve_pair(DEFAULT_PAIR, registry)
        base_path = resolve_model(args.base or default_base, registry)
        guide_path = resolve_model(args.guide or default_guide, registry)
        base = LlamaModel(base_path, options)
        phases["base model"] = rss_split()
        guide = LlamaModel(guide_path, options)
        phases["guide model"] = rss_split()
        pair = BlendPair(base, guide, load_bridge(base, guide))
        phases["bridge"] = rss_split()
        out["rss_after_load"] = phases["bridge"]["VmRSS"]
        for prompt in load_prompts(Path(args.data_dir), 2):
            pair.generate(prompt["question"], GenerationSettings(method="blendin", max_tokens=64, system=prompt["system"],
                                                                 stop_at_new_turn=False))
        phases["generation"] = rss_split()
        out.update(memory_report(pair))
        out["rss_after_generation"] = phases["generation"]["VmRSS"]
        out["phases"] = phases
    print(json.dumps(out))


def run_child(kind: str, args, ctx: int | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "-t", str(args.threads),
           "-c", str(ctx or args.ctx), "--data-dir", str(args.data_dir)]
    cmd += [arg for option, value in (("--base", args.base), ("--guide", args.guide)) if value for arg in (option, value)]
    t0 = perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["process_s"] = perf_counter() - t0
    return data


# -- scaling -----------------------------------------------------------------------------------


def scaling(pair: BlendPair, profiler: Profiler, args, prompts: list[dict]) -> dict:
    out: dict = {"output_length": {}, "context_length": {}, "memory_vs_n_ctx": {}}
    # 1. Output length: one long answer per method and prompt, end-of-generation disabled so that
    # every run reaches the length (costs, not text, are measured here).
    saved = {m: m.eog_ids for m in (pair.base, pair.guide)}
    lengths = [64, 128, 256, 512, 1024]
    longest = min(max(lengths), pair.base.n_ctx - 300)
    try:
        for m in saved:
            m.eog_ids = frozenset()
        for prompt in prompts[:args.scaling_prompts]:
            for method in ("base", "blendin"):
                r = run_request(pair, method, prompt, longest, profiler, turn_stops=False, per_token_profile=True)
                out["output_length"].setdefault(method, []).append(
                    {"prompt": prompt["id"], "token_at_s": r["token_at_s"], "forward_at_s": r["forward_at_s"],
                     "interventions": r["interventions"], "n_tokens": r["n_tokens"]})
                print(f"  scaling/output {method} {prompt['id']}: {r['n_tokens']} tokens in {r['wall_s']:.1f}s", file=sys.stderr)
    finally:
        for m, ids in saved.items():
            m.eog_ids = ids
    # 2. Context length: long prompts (questions of the prompt set repeated), 32 new tokens.
    filler = "\n".join(p["question"] for p in load_prompts(Path(args.data_dir), 24))
    for target in (128, 512, 1024, 2048, 3072):
        if target + 64 > pair.base.n_ctx:
            continue
        ids = pair.base.tokenize(filler.encode())
        while len(ids) < target:
            ids = ids + ids
        question = b"".join(pair.base.pieces[t] for t in ids[:target]).decode("utf-8", "ignore")
        prompt = {"id": f"ctx{target}", "question": "Summarize this text:\n" + question, "system": None}
        for method in ("base", "blendin"):
            r = run_request(pair, method, prompt, 32, profiler, turn_stops=False, per_token_profile=True)
            overhead = (r["wall_s"] - r["times"].get("base forward", 0) - r["times"].get("guide forward", 0)) / max(1, r["n_tokens"])
            out["context_length"].setdefault(method, []).append({
                "prompt_tokens": len(prompt_tokens(pair.base, as_messages(prompt["question"], None), "plain")),
                "ttft_ms": 1e3 * r["ttft_s"], "decode_ms_per_token": 1e3 * statistics.median(r["gaps_s"]),
                "engine_overhead_ms_per_token": 1e3 * overhead, "n_tokens": r["n_tokens"]})
            print(f"  scaling/context {method} {target}: ttft {r['ttft_s']:.2f}s", file=sys.stderr)
    # 3. Memory against n_ctx, each in a fresh process.
    for n_ctx in (512, 1024, 2048, 4096, 8192):
        data = run_child("memory", args, ctx=n_ctx)
        out["memory_vs_n_ctx"][n_ctx] = {k: data[k] for k in ("rss_after_load", "peak_rss", "files_plus_kv", "kv_bytes",
                                                              "gguf_bytes", "rss_after_generation")}
        print(f"  scaling/memory n_ctx {n_ctx}: peak {data['peak_rss'] / 2**20:.0f} MiB", file=sys.stderr)
    return out


def set_threads(model: LlamaModel, n: int) -> None:
    llama.llama_set_n_threads(model._ctx, n, n)


def thread_split(pair: BlendPair, profiler: Profiler | None, args, prompts: list[dict]) -> dict:
    """Base-only and BlendIn with every split of the machine's threads between the two models,
    interleaved per prompt (order rotated). Each model keeps its own thread count; the two never
    run at once, so BlendIn with base b and guide g threads is what a user gets with those."""
    counts = sorted({1, args.split_max_threads})
    configs = [("base", b, None) for b in counts] + [("blendin", b, g) for b in counts for g in counts]
    runs = []
    try:
        for i, prompt in enumerate(prompts[:args.split_prompts]):
            for method, b, g in configs[i % len(configs):] + configs[:i % len(configs)]:
                set_threads(pair.base, b)
                set_threads(pair.guide, g or b)
                r = run_request(pair, method, prompt, args.max_tokens, profiler, args.turn_stops)
                runs.append({"method": method, "base_threads": b, "guide_threads": g, "prompt": prompt["id"],
                             "n_tokens": r["n_tokens"], "wall_s": r["wall_s"], "text": r["text"]})
                print(f"  thread split {method} base {b} guide {g}: {r['n_tokens'] / r['wall_s']:.1f} tok/s", file=sys.stderr)
    finally:
        set_threads(pair.base, args.threads)
        set_threads(pair.guide, args.threads)
    tps = defaultdict(dict)
    for r in runs:
        tps[(r["method"], r["base_threads"], r["guide_threads"])][r["prompt"]] = r["n_tokens"] / r["wall_s"]
    rows = []
    for key, by_prompt in tps.items():
        row = {"method": key[0], "base_threads": key[1], "guide_threads": key[2],
               "tokens_per_s_median": statistics.median(by_prompt.values())}
        for b in counts:  # per prompt, against base-only at each thread count
            ref = tps[("base", b, None)]
            ratios = [v / ref[p] for p, v in by_prompt.items() if p in ref]
            row[f"over_base_{b}"] = statistics.median(ratios) if ratios else float("nan")
        rows.append(row)
    return {"counts": counts, "rows": rows, "runs": runs}


def thread_split_table(t: dict) -> str:
    counts = t["counts"]
    lines = ["### Thread split between the two models (median tokens/s over prompts; ratios per prompt, median)", "",
             "| method | base threads | guide threads | tokens/s | " + " | ".join(f"/ base-only at {b}" for b in counts) + " |",
             "|---|---:|---:|---:|" + "---:|" * len(counts)]
    for r in t["rows"]:
        lines.append(f"| {r['method']} | {r['base_threads']} | {r['guide_threads'] or ''} | {r['tokens_per_s_median']:.1f} | "
                     + " | ".join(f"{r[f'over_base_{b}']:.2f}" for b in counts) + " |")
    return "\n".join(lines)


def scaling_tables(s: dict) -> str:
    lines = ["### Output length (end-of-generation disabled; cumulative over one run per prompt)", "",
             "| method | tokens | tokens/s (median over prompts) | ms/token in this window | engine overhead ms/token in window |",
             "|---|---:|---:|---:|---:|"]
    windows = [(0, 64), (64, 128), (128, 256), (256, 512), (512, 1024)]
    for method, runs in s["output_length"].items():
        for lo, hi in windows:
            rates, win, ovh = [], [], []
            for r in runs:
                t, f = r["token_at_s"], r["forward_at_s"]
                if len(t) < hi:
                    continue
                rates.append(hi / t[hi - 1])
                span = t[hi - 1] - (t[lo - 1] if lo else 0.0)
                fwd = f[hi - 1] - (f[lo - 1] if lo else 0.0)
                win.append(1e3 * span / (hi - lo))
                ovh.append(1e3 * (span - fwd) / (hi - lo))
            if rates:
                lines.append(f"| {method} | {hi} | {statistics.median(rates):.1f} | {statistics.median(win):.2f} "
                             f"| {statistics.median(ovh):.3f} |")
    lines += ["", "### Context length (32 new tokens)", "",
              "| method | prompt tokens | time to first token ms | decode ms/token (median) | engine overhead ms/token |",
              "|---|---:|---:|---:|---:|"]
    for method, rows in s["context_length"].items():
        for r in rows:
            lines.append(f"| {method} | {r['prompt_tokens']} | {r['ttft_ms']:.0f} | {r['decode_ms_per_token']:.2f} "
                         f"| {r['engine_overhead_ms_per_token']:.3f} |")
    lines += ["", "### Memory against n_ctx (fresh process: load, blendin on 2 prompts x 64 tokens)", "",
              "| n_ctx | KV caches MiB (base + guide) | files + KV MiB | RSS after load MiB | peak RSS MiB | peak / (files + KV) |",
              "|---:|---:|---:|---:|---:|---:|"]
    for n_ctx, m in s["memory_vs_n_ctx"].items():
        kv = sum(m["kv_bytes"].values())
        lines.append(f"| {n_ctx} | {kv / 2**20:.0f} | {m['files_plus_kv'] / 2**20:.0f} | {m['rss_after_load'] / 2**20:.0f} "
                     f"| {m['peak_rss'] / 2**20:.0f} | {m['peak_rss'] / m['files_plus_kv']:.2f} |")
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------------------


def fmt_table(summary: dict, methods_order) -> str:
    lines = ["| method | tokens | tokens/s median | p10-p90 (min-max) | aggregate tokens/s | after 1st token | latency p50 / p95 ms "
             "| TTFT median ms | intervention rate |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for m in methods_order:
        if m not in summary:
            continue
        s = summary[m]
        lines.append(f"| {m} | {s['tokens']} | {s['tokens_per_s_median']:.1f} | {s['tokens_per_s_p10']:.1f}-{s['tokens_per_s_p90']:.1f} "
                     f"({s['tokens_per_s_min']:.1f}-{s['tokens_per_s_max']:.1f}) | {s['tokens_per_s_aggregate']:.1f} "
                     f"| {s['decode_tokens_per_s_aggregate']:.1f} "
                     f"| {s['latency_p50_ms']:.1f} / {s['latency_p95_ms']:.1f} | {s['ttft_median_ms']:.0f} "
                     f"| {100 * s['intervention_rate']:.1f}% |")
    lines += ["", "Tokens each model evaluated per generated token (prompt included), and dense mixtures built:", "",
              "| method | base | guide | dense mixtures / interventions |", "|---|---:|---:|---:|"]
    for m in methods_order:
        if m in summary:
            s = summary[m]
            lines.append(f"| {m} | {s['base_tokens_evaluated_per_token']:.2f} | {s['guide_tokens_evaluated_per_token']:.2f} "
                         f"| {s['dense_mixtures']} / {s['interventions']} |")
    lines += ["", "Where the time goes (share of each method's wall time; exclusive timers):", "",
              "| method | " + " | ".join(PARTS) + " | instrumentation (est.) | engine overhead (all but forwards) |",
              "|---|" + "---:|" * (len(PARTS) + 2)]
    for m in methods_order:
        if m not in summary:
            continue
        s = summary[m]
        wall = s["wall_s"]
        cells = [f"{100 * s['parts_s'][p] / wall:.1f}%" for p in PARTS]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {100 * s['parts_s']['instrumentation (estimated)'] / wall:.1f}% "
                     f"| {100 * s['engine_overhead_share']:.1f}% |")
    lines += ["", "Per token, in ms (wall / tokens; exclusive timers in detail):", "",
              "| method | wall | " + " | ".join(ROLLUP) + " |", "|---|---:|" + "---:|" * len(ROLLUP)]
    for m in methods_order:
        if m not in summary:
            continue
        s = summary[m]
        n = max(1, s["tokens"])
        lines.append(f"| {m} | {1e3 * s['wall_s'] / n:.2f} | " + " | ".join(
            f"{1e3 * s['detail_s'].get(k, 0.0) / n:.3f}" for k in ROLLUP) + " |")
    return "\n".join(lines)


def targets(results: dict) -> list[tuple[str, str, str, bool | None]]:
    s = results["summary"]
    rows = []
    if "blendin" in s and "base" in s:
        pr = results["paired"]["blendin/base"]
        agg = s["blendin"]["tokens_per_s_aggregate"] / s["base"]["tokens_per_s_aggregate"]
        dec = results["paired"]["blendin/base decode"]
        rows.append(("BlendIn throughput / base-only (gamma 0.4)", ">= 0.8",
                     f"{pr['median']:.2f} end to end, median of per-prompt ratios (p10-p90 {pr['p10']:.2f}-{pr['p90']:.2f}); "
                     f"{agg:.2f} aggregate; after the first token {dec['median']:.2f}", pr["median"] >= 0.8))
    if "blendin" in s:
        b = s["blendin"]
        rows.append(("engine overhead (all but the two forwards) / BlendIn wall", "<= 5%",
                     f"{100 * b['engine_overhead_share']:.1f}% ({100 * b['engine_overhead_share_raw']:.1f}% with the timers' own cost)",
                     b["engine_overhead_share"] <= 0.05))
        if b["blend_math_ms_per_intervention"] is not None:
            rows.append(("bridge + blend math per intervention (262k base vocabulary)", "<= 1 ms",
                         f"{b['blend_math_ms_per_intervention']:.3f} ms in generation"
                         + (f"; {results['micro']['per_intervention_ms']:.3f} ms isolated" if results.get("micro") else ""),
                         b["blend_math_ms_per_intervention"] <= 1.0))
    if "blendin" in s and "reference" in s:
        ratio = results["paired"]["blendin/reference"]
        rows.append(("BlendIn throughput / reference-style", ">= 5x",
                     f"{ratio['median']:.1f}x median per prompt; {s['blendin']['tokens_per_s_aggregate'] / s['reference']['tokens_per_s_aggregate']:.1f}x aggregate",
                     ratio["median"] >= 5))
    if results.get("cold"):
        c = results["cold"]
        rows.append(("cold start: both models + cached bridge", "<= 3 s",
                     f"{c['load_s']:.2f} s (BlendPair.load, median of {c['runs']}); {c['process_s']:.2f} s whole process with imports",
                     c["load_s"] <= 3.0))
        rows.append(("building the bridge from scratch", "<= 10 s", f"{c['bridge_scratch_s']:.2f} s", c["bridge_scratch_s"] <= 10))
    m, whole = results["memory"], results["memory_whole_benchmark"]
    rows.append(("peak RSS / (GGUF files + KV caches)", "<= 1.3x",
                 f"{m['peak_over_files_plus_kv']:.2f}x ({m['peak_rss'] / 2**20:.0f} MiB / {m['files_plus_kv'] / 2**20:.0f} MiB at n_ctx {m['n_ctx']}: "
                 f"a fresh process loading the pair and running BlendIn; the whole benchmark process peaked at "
                 f"{whole['peak_rss'] / 2**20:.0f} MiB)", m["peak_over_files_plus_kv"] <= 1.3))
    return rows


def memory_table(m: dict) -> str:
    """Where a BlendIn process's resident memory goes, phase by phase (MiB)."""
    lines = [f"Memory of a fresh BlendIn process at n_ctx {m['n_ctx']} (MiB; anonymous = heap and buffers, "
             "file = mapped GGUF files and shared libraries):", "",
             "| after | RSS | anonymous | file | added |", "|---|---:|---:|---:|---:|"]
    previous = 0
    for phase, v in m["phases"].items():
        lines.append(f"| {phase} | {v['VmRSS'] / 2**20:.0f} | {v['RssAnon'] / 2**20:.0f} | {v['RssFile'] / 2**20:.0f} "
                     f"| {(v['VmRSS'] - previous) / 2**20:+.0f} |")
        previous = v["VmRSS"]
    kv = ", ".join(f"{name} {b / 2**20:.0f}" for name, b in m["kv_bytes"].items())
    files = ", ".join(f"{name} {b / 2**20:.0f}" for name, b in m["gguf_bytes"].items())
    lines += ["", f"Budget: GGUF files ({files}) + KV caches ({kv}) = {m['files_plus_kv'] / 2**20:.0f} MiB; "
              f"peak {m['peak_rss'] / 2**20:.0f} MiB = {m['peak_over_files_plus_kv']:.2f}x."]
    return "\n".join(lines)


def report_md(results: dict) -> str:
    cfg = results["config"]
    lines = [f"Benchmark: {cfg.get('base', 'default base')} + {cfg.get('guide', 'default guide')}, {cfg['prompts']} prompts x {cfg['max_tokens']} new tokens, greedy, threads {cfg['threads']} per model, "
             f"n_ctx {cfg['ctx']}, turn stops {'on' if cfg['turn_stops'] else 'off'}, methods interleaved (order rotated per prompt); "
             f"{cfg['cpu']}, llama-cpp-python {cfg['llama_cpp_python']}, numpy {cfg['numpy']}; "
             f"total {results['elapsed_s'] / 60:.1f} min.", "",
             "```", cfg["command"], "```", "",
             fmt_table(results["summary"], METHODS), ""]
    if results.get("micro"):
        mi = results["micro"]
        lines += [f"Isolated bridge + blend math (synthetic distributions, {mi['repeats']} repeats): "
                  + ", ".join(f"{k} {v:.3f} ms" for k, v in mi["parts_ms"].items())
                  + f"; total {mi['per_intervention_ms']:.3f} ms per intervention.", ""]
    lines += ["| target | goal | measured | met |", "|---|---|---|---|"]
    for name, goal, measured, met in targets(results):
        lines.append(f"| {name} | {goal} | {measured} | {'met' if met else 'NOT met'} |")
    lines += ["", memory_table(results["memory"])]
    if results.get("thread_split"):
        lines += ["", thread_split_table(results["thread_split"])]
    if results.get("scaling"):
        lines += ["", scaling_tables(results["scaling"])]
    return "\n".join(lines) + "\n"


def micro_blend(pair: BlendPair, repeats: int) -> dict:
    """The per-intervention math alone, on synthetic distributions: the guide's softmax, its
    projection onto the base vocabulary, auto alpha, the mixture and its greedy choice, the rank
    of the guide's top token in the base's distribution."""
    rng = np.random.default_rng(0)
    base_logits = (rng.standard_normal(pair.base.n_vocab) * 3).astype(np.float32)
    guide_logits = (rng.standard_normal(pair.guide.n_vocab) * 3).astype(np.float32)
    p_base = blending.softmax(base_logits)
    parts = defaultdict(float)
    for _ in range(repeats):
        t = perf_counter()
        p_guide = blending.softmax(guide_logits)
        t1 = perf_counter(); parts["guide softmax"] += t1 - t
        on_base = pair.bridge.project_sparse(p_guide)
        t2 = perf_counter(); parts["projection"] += t2 - t1
        blending.argmax(blending.blend(p_base, on_base, None).probs)  # the engine's path: auto alpha, the mixture, its greedy choice
        t3 = perf_counter(); parts["blend + greedy choice"] += t3 - t2
        top = blending.top_of(on_base)[1]
        methods.rank_in(p_base, top)
        parts["rank"] += perf_counter() - t3
    parts_ms = {k: 1e3 * v / repeats for k, v in parts.items()}
    core = sum(parts_ms.values())
    return {"repeats": repeats, "parts_ms": parts_ms, "per_intervention_ms": core}


# -- main --------------------------------------------------------------------------------------


def compare(old_path: str, new_path: str) -> int:
    old, new = (json.loads(Path(p).read_text()) for p in (old_path, new_path))
    key = lambda r: (r["method"], r["prompt"])  # noqa: E731
    a = {key(r): r["text"] for r in old["runs"]}
    b = {key(r): r["text"] for r in new["runs"]}
    common = sorted(a.keys() & b.keys())
    diff = [k for k in common if a[k] != b[k]]
    print(f"{len(common)} (method, prompt) pairs in both runs; {len(common) - len(diff)} identical, {len(diff)} differ")
    for k in diff:
        print(f"--- {k}\n  old: {a[k][:200]!r}\n  new: {b[k][:200]!r}")
    return 1 if diff else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads of each model (default 1)")
    ap.add_argument("--base", help="base model: registry name or GGUF path (default: the default pair's)")
    ap.add_argument("--guide", help="guide model: registry name or GGUF path (default: the default pair's)")
    ap.add_argument("-c", "--ctx", type=int, default=4096, help="n_ctx of each model (default 4096, the CLI's)")
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=24, help="prompts, drawn evenly from six datasets")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--reference-prompts", type=int, default=None, help="run the slow reference on only this many prompts")
    ap.add_argument("--turn-stops", action="store_true", help="stop where the base starts a new turn (off: ~max tokens each)")
    ap.add_argument("--data-dir", default=os.environ.get("BLENDIN_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--cold-runs", type=int, default=3, help="fresh processes for cold start (0: skip)")
    ap.add_argument("--micro-repeats", type=int, default=200)
    ap.add_argument("--scaling", action="store_true", help="also: output length, context length, memory against n_ctx")
    ap.add_argument("--scaling-prompts", type=int, default=3)
    ap.add_argument("--split-prompts", type=int, default=0,
                    help="also: base-only and BlendIn under every split of threads between the two models, on this many prompts")
    ap.add_argument("--split-max-threads", type=int, default=default_threads(), help="the thread counts tried: 1 and this")
    ap.add_argument("--no-profile", action="store_true", help="no timers (throughput only)")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI: 2 prompts, 6 tokens, n_ctx 512, one cold start")
    ap.add_argument("--out", help="write all results (JSON, with every generated text) here")
    ap.add_argument("--md", help="write the markdown report here")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare the texts of two result files")
    ap.add_argument("--child", choices=("cold", "memory"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.child:
        child_main(args)
        return 0
    if args.smoke:
        args.prompts, args.max_tokens, args.ctx, args.cold_runs, args.micro_repeats = 2, 6, 512, 1, 5
        args.scaling, args.split_prompts, args.split_max_threads = False, 1, 2
    method_list = [m for m in args.methods.split(",") if m]
    unknown = set(method_list) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods: {', '.join(sorted(unknown))}")
    started = perf_counter()
    prompts = load_prompts(Path(args.data_dir), args.prompts)

    cold = None
    if args.cold_runs:
        runs = [run_child("cold", args) for _ in range(args.cold_runs)]
        cold = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        cold["runs"] = len(runs)
        cold["all"] = runs
        print(f"cold start {cold['load_s']:.2f}s, bridge from scratch {cold['bridge_scratch_s']:.2f}s", file=sys.stderr)

    memory = run_child("memory", args)
    print(f"memory: peak {memory['peak_rss'] / 2**20:.0f} MiB in a fresh BlendIn process", file=sys.stderr)

    pair = BlendPair.load(args.base, args.guide, options=LoadOptions(n_ctx=args.ctx, n_threads=args.threads))
    profiler = None if args.no_profile else Profiler()
    wrapper_cost = Profiler.wrapper_cost() if profiler else 0.0
    if profiler:
        profiler.install(pair)
    runs = []
    try:
        for i, prompt in enumerate(prompts):
            order = method_list[i % len(method_list):] + method_list[:i % len(method_list)]
            for method in order:
                if method == "reference" and args.reference_prompts is not None and i >= args.reference_prompts:
                    continue
                r = run_request(pair, method, prompt, args.max_tokens, profiler, args.turn_stops)
                runs.append(r)
                print(f"[{i + 1}/{len(prompts)}] {method:9} {prompt['id']:16} {r['n_tokens']:4} tokens "
                      f"{r['n_tokens'] / r['wall_s']:6.1f} tok/s  int {r['interventions']}", file=sys.stderr)
        micro = micro_blend(pair, args.micro_repeats) if args.micro_repeats else None
        split = thread_split(pair, profiler, args, prompts) if args.split_prompts else None
        scale = scaling(pair, profiler, args, prompts) if args.scaling else None
    finally:
        if profiler:
            profiler.uninstall()
    summary = summarize(runs, wrapper_cost)
    results = {
        "config": {"threads": args.threads, "ctx": args.ctx, "max_tokens": args.max_tokens, "prompts": len(prompts),
                   "base": pair.base.name, "guide": pair.guide.name,
                   "methods": method_list, "turn_stops": args.turn_stops, "profile": profiler is not None,
                   "wrapper_cost_us": 1e6 * wrapper_cost, "llama_cpp_python": llama_cpp.__version__,
                   "numpy": np.__version__, "python": platform.python_version(),
                   "cpu": _cpu_name(), "cores": os.cpu_count(),
                   "command": "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "prompt_ids": [p["id"] for p in prompts]},
        "summary": summary,
        "paired": {"blendin/base": paired_ratio(runs, "blendin", "base"),
                   "blendin/base decode": paired_ratio(runs, "blendin", "base", decode=True),
                   "blendin/reference": paired_ratio(runs, "blendin", "reference")},
        "cold": cold,
        "micro": micro,
        "memory": memory,
        "memory_whole_benchmark": memory_report(pair),
        "thread_split": split,
        "scaling": scale,
        "elapsed_s": perf_counter() - started,
        "runs": runs,
    }
    md = report_md(results)
    results["targets"] = [{"target": n, "goal": g, "measured": v, "met": m} for n, g, v, m in targets(results)]
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(md)
    pair.close()
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
