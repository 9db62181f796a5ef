"""What the benchmark measures (scripts/bench.py runs it): one request of any method with its
timings, the timers wrapped around the engine's functions, the reference-style baseline, memory,
cold start, thread splits, scaling, and the blend math on its own.

Timers are installed from here around the package's functions (nothing in the package is
edited); each counts its own time minus that of the timers nested inside it. Child processes
(cold start, memory) run through bench.py's own command line, `--child KIND`.
"""

from __future__ import annotations

import json
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

import llama_cpp.llama_cpp as llama  # noqa: E402

from blendin_local.backends.llama import LlamaModel, LoadOptions  # noqa: E402
from blendin_local.backends.registry import DEFAULT_PAIR, load_registry, resolve_model, resolve_pair  # noqa: E402
from blendin_local.engine import base_cursor, blending, bridge, generation, guide_cursor, methods  # noqa: E402
from blendin_local.engine.byte_tokens import tokens_for_bytes  # noqa: E402
from blendin_local.engine.generation import Finished  # noqa: E402
from blendin_local.engine.prompts import prompt_tokens  # noqa: E402
from blendin_local.engine.settings import GenerationSettings  # noqa: E402
from blendin_local.errors import BlendinError  # noqa: E402
from blendin_local.eval.variants import parse_variant  # noqa: E402
from blendin_local.pair import BlendPair, as_messages, load_bridge, vocabulary  # noqa: E402

RUNNER = Path(__file__).resolve().with_name("bench.py")  # children parse their arguments there
METHODS = ("base", "guide", "nudging", "blendin", "ensemble", "reference")


def is_variant(name: str) -> bool:
    """Whether `name` is a method or a variant of one (eval/variants.py: blendin+end, ...)."""
    try:
        parse_variant(name)
    except BlendinError:
        return False
    return True


DATASETS = ("gsm8k", "arc_easy", "truthfulqa", "xstest", "ifeval", "justeval")
PROMPT_SEED = 7  # the benchmark's own draw, not the evaluation's subset


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
        self.wrap(blending.LazyMixture, "argmax", "blend")
        self.wrap(blending.LazyMixture, "dense", "blend: dense mixture")
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
        ids = np.argpartition(-logp, self.top)[: self.top]
        ids = ids[np.argsort(-logp[ids], kind="stable")]
        out: dict[str, tuple[float, int]] = {}
        for t in ids.tolist():
            piece = model.pieces[t] or model.token_bytes(t, special=True)
            key = piece.decode("utf-8", "replace")
            if key not in out:
                out[key] = (float(np.exp(logp[t])), t)
        return out

    def _tokens(self, model: LlamaModel, prompt: list[int], response: bytes) -> list[int]:
        return prompt + self._timed(
            "tokenize",
            tokens_for_bytes,
            model.tokenize,
            model.pieces,
            self.pair.bridge.base_prefix if model is self.pair.base else self.pair.bridge.guide_prefix,
            response,
        )

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
                key, owner, token = self._timed(
                    "reference top-k + string blend", self._blend, base_top, guide_top, pb_max
                )
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


def run_request(
    pair: BlendPair,
    method: str,
    prompt: dict,
    max_tokens: int,
    profiler: Profiler | None,
    turn_stops: bool,
    per_token_profile: bool = False,
) -> dict:
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
        name, overrides = parse_variant(method)  # a method, or a variant such as blendin+end
        settings = GenerationSettings(
            **overrides, method=name, max_tokens=max_tokens, system=prompt["system"], stop_at_new_turn=turn_stops
        )
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
        "method": method,
        "prompt": prompt["id"],
        "text": text,
        "n_tokens": n_tokens,
        "stop": stop,
        "interventions": interventions,
        "wall_s": wall,
        "ttft_s": stamps[0] - t0 if stamps else None,
        "gaps_s": [b - a for a, b in zip(stamps, stamps[1:], strict=False)],
        "times": times,
        "calls": calls,
    }
    if per_token_profile:
        out["token_at_s"] = [s - t0 for s in stamps]
        base_fwd0 = before[0].get("base forward", 0.0) + before[0].get("guide forward", 0.0)
        out["forward_at_s"] = [f - base_fwd0 for f in forward_at]
    return out


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


def rss_split() -> dict:
    """Resident memory now, split into anonymous (heap, buffers) and file-backed (mapped GGUF
    files, shared libraries) pages."""
    return {k: 1024 * (_status_kib(k) or 0) for k in ("VmRSS", "RssAnon", "RssFile")}


def memory_report(pair: BlendPair) -> dict:
    files = {m.name: m.path.stat().st_size for m in (pair.base, pair.guide)}
    kv = {m.name: kv_bytes(m) for m in (pair.base, pair.guide)}
    budget = sum(files.values()) + sum(kv.values())
    peak = peak_rss_bytes()
    return {
        "gguf_bytes": files,
        "kv_bytes": kv,
        "files_plus_kv": budget,
        "peak_rss": peak,
        "peak_over_files_plus_kv": peak / budget,
        "n_ctx": pair.base.n_ctx,
    }


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
        bridge.VocabBridge.build(
            vocabulary(pair.base),
            vocabulary(pair.guide),
            base_tokenize=pair.base.tokenize,
            guide_tokenize=pair.guide.tokenize,
            cache_dir=None,
        )
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
            pair.generate(
                prompt["question"],
                GenerationSettings(method="blendin", max_tokens=64, system=prompt["system"], stop_at_new_turn=False),
            )
        phases["generation"] = rss_split()
        out.update(memory_report(pair))
        out["rss_after_generation"] = phases["generation"]["VmRSS"]
        out["phases"] = phases
    print(json.dumps(out))


def run_child(kind: str, args, ctx: int | None = None) -> dict:
    cmd = [
        sys.executable,
        str(RUNNER),
        "--child",
        kind,
        "-t",
        str(args.threads),
        "-c",
        str(ctx or args.ctx),
        "--data-dir",
        str(args.data_dir),
    ]
    cmd += [
        arg for option, value in (("--base", args.base), ("--guide", args.guide)) if value for arg in (option, value)
    ]
    t0 = perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["process_s"] = perf_counter() - t0
    return data


# -- scaling, thread split, the blend math alone ----------------------------------------------


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
        for prompt in prompts[: args.scaling_prompts]:
            for method in ("base", "blendin"):
                r = run_request(pair, method, prompt, longest, profiler, turn_stops=False, per_token_profile=True)
                out["output_length"].setdefault(method, []).append(
                    {
                        "prompt": prompt["id"],
                        "token_at_s": r["token_at_s"],
                        "forward_at_s": r["forward_at_s"],
                        "interventions": r["interventions"],
                        "n_tokens": r["n_tokens"],
                    }
                )
                print(
                    f"  scaling/output {method} {prompt['id']}: {r['n_tokens']} tokens in {r['wall_s']:.1f}s",
                    file=sys.stderr,
                )
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
            overhead = (r["wall_s"] - r["times"].get("base forward", 0) - r["times"].get("guide forward", 0)) / max(
                1, r["n_tokens"]
            )
            out["context_length"].setdefault(method, []).append(
                {
                    "prompt_tokens": len(prompt_tokens(pair.base, as_messages(prompt["question"], None), "plain")),
                    "ttft_ms": 1e3 * r["ttft_s"],
                    "decode_ms_per_token": 1e3 * statistics.median(r["gaps_s"]),
                    "engine_overhead_ms_per_token": 1e3 * overhead,
                    "n_tokens": r["n_tokens"],
                }
            )
            print(f"  scaling/context {method} {target}: ttft {r['ttft_s']:.2f}s", file=sys.stderr)
    # 3. Memory against n_ctx, each in a fresh process.
    for n_ctx in (512, 1024, 2048, 4096, 8192):
        data = run_child("memory", args, ctx=n_ctx)
        out["memory_vs_n_ctx"][n_ctx] = {
            k: data[k]
            for k in ("rss_after_load", "peak_rss", "files_plus_kv", "kv_bytes", "gguf_bytes", "rss_after_generation")
        }
        print(f"  scaling/memory n_ctx {n_ctx}: peak {data['peak_rss'] / 2**20:.0f} MiB", file=sys.stderr)
    return out


def set_threads(model: LlamaModel, n: int) -> None:
    llama.llama_set_n_threads(model._ctx, n, n)
    model.threads = n


def thread_split(pair: BlendPair, profiler: Profiler | None, args, prompts: list[dict]) -> dict:
    """Base-only and BlendIn with every split of the machine's threads between the two models,
    interleaved per prompt (order rotated). Each model keeps its own thread count; the two never
    run at once, so BlendIn with base b and guide g threads is what a user gets with those."""
    counts = sorted({1, args.split_max_threads})
    configs = [("base", b, None) for b in counts] + [("blendin", b, g) for b in counts for g in counts]
    runs = []
    try:
        for i, prompt in enumerate(prompts[: args.split_prompts]):
            for method, b, g in configs[i % len(configs) :] + configs[: i % len(configs)]:
                set_threads(pair.base, b)
                set_threads(pair.guide, g or b)
                r = run_request(pair, method, prompt, args.max_tokens, profiler, args.turn_stops)
                runs.append(
                    {
                        "method": method,
                        "base_threads": b,
                        "guide_threads": g,
                        "prompt": prompt["id"],
                        "n_tokens": r["n_tokens"],
                        "wall_s": r["wall_s"],
                        "text": r["text"],
                    }
                )
                print(
                    f"  thread split {method} base {b} guide {g}: {r['n_tokens'] / r['wall_s']:.1f} tok/s",
                    file=sys.stderr,
                )
    finally:
        set_threads(pair.base, args.threads)
        set_threads(pair.guide, args.threads)
    tps = defaultdict(dict)
    for r in runs:
        tps[(r["method"], r["base_threads"], r["guide_threads"])][r["prompt"]] = r["n_tokens"] / r["wall_s"]
    rows = []
    for key, by_prompt in tps.items():
        row = {
            "method": key[0],
            "base_threads": key[1],
            "guide_threads": key[2],
            "tokens_per_s_median": statistics.median(by_prompt.values()),
        }
        for b in counts:  # per prompt, against base-only at each thread count
            ref = tps[("base", b, None)]
            ratios = [v / ref[p] for p, v in by_prompt.items() if p in ref]
            row[f"over_base_{b}"] = statistics.median(ratios) if ratios else float("nan")
        rows.append(row)
    return {"counts": counts, "rows": rows, "runs": runs}


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
        t1 = perf_counter()
        parts["guide softmax"] += t1 - t
        on_base = pair.bridge.project_sparse(p_guide)
        t2 = perf_counter()
        parts["projection"] += t2 - t1
        blending.argmax(
            blending.blend(p_base, on_base, None).probs
        )  # the engine's path: auto alpha, the mixture, its greedy choice
        t3 = perf_counter()
        parts["blend + greedy choice"] += t3 - t2
        top = blending.top_of(on_base)[1]
        methods.rank_in(p_base, top)
        parts["rank"] += perf_counter() - t3
    parts_ms = {k: 1e3 * v / repeats for k, v in parts.items()}
    core = sum(parts_ms.values())
    return {"repeats": repeats, "parts_ms": parts_ms, "per_intervention_ms": core}
