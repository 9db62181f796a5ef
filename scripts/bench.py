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

This file is the runner and its command line; bench_measure.py holds the measurements,
bench_report.py the summary, the report and --compare.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from time import perf_counter

import llama_cpp
import numpy as np
from bench_measure import (
    METHODS,
    ROOT,
    Profiler,
    child_main,
    is_variant,
    load_prompts,
    memory_report,
    micro_blend,
    run_child,
    run_request,  # first: it puts the repository on sys.path
    scaling,
    thread_split,
)
from bench_report import compare, paired_ratio, report_md, summarize, targets
from bench_speculation import speculation_bench

from blendin_local.backends.llama import LoadOptions, default_threads
from blendin_local.pair import BlendPair


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("-t", "--threads", type=int, default=1, help="threads of each model (default 1)")
    ap.add_argument("--base", help="base model: registry name or GGUF path (default: the default pair's)")
    ap.add_argument("--guide", help="guide model: registry name or GGUF path (default: the default pair's)")
    ap.add_argument("-c", "--ctx", type=int, default=4096, help="n_ctx of each model (default 4096, the CLI's)")
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=24, help="prompts, drawn evenly from six datasets")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--reference-prompts", type=int, default=None, help="run the slow reference on only this many prompts"
    )
    ap.add_argument(
        "--turn-stops", action="store_true", help="stop where the base starts a new turn (off: ~max tokens each)"
    )
    ap.add_argument("--data-dir", default=os.environ.get("BLENDIN_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--cold-runs", type=int, default=3, help="fresh processes for cold start (0: skip)")
    ap.add_argument("--micro-repeats", type=int, default=200)
    ap.add_argument("--scaling", action="store_true", help="also: output length, context length, memory against n_ctx")
    ap.add_argument("--scaling-prompts", type=int, default=3)
    ap.add_argument(
        "--split-prompts",
        type=int,
        default=0,
        help="also: base-only and BlendIn under every split of threads between the two models, on this many prompts",
    )
    ap.add_argument(
        "--split-max-threads", type=int, default=default_threads(), help="the thread counts tried: 1 and this"
    )
    ap.add_argument("--no-profile", action="store_true", help="no timers (throughput only)")
    ap.add_argument(
        "--smoke", action="store_true", help="tiny run for CI: 2 prompts, 6 tokens, n_ctx 512, one cold start"
    )
    ap.add_argument("--out", help="write all results (JSON, with every generated text) here")
    ap.add_argument("--md", help="write the markdown report here")
    ap.add_argument(
        "--speculative",
        metavar="K,K,...",
        help="only speculative BlendIn: base, BlendIn and BlendIn --speculative K for each K, side by side,"
        " per thread setup, with the cost model (bench_speculation.py)",
    )
    ap.add_argument(
        "--speculative-threads",
        default="2/2,1/2",
        metavar="B/G,...",
        help="thread setups for --speculative: the base's threads / the guide's (default 2/2,1/2: the second"
        " stands in for a base much slower than its guide)",
    )
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
    unknown = {m for m in method_list if m != "reference" and not is_variant(m)}
    if unknown:
        ap.error(f"unknown methods: {', '.join(sorted(unknown))}")
    started = perf_counter()
    prompts = load_prompts(Path(args.data_dir), args.prompts)
    if args.speculative:
        return write_speculation(args, argv, prompts, started)

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
            order = method_list[i % len(method_list) :] + method_list[: i % len(method_list)]
            for method in order:
                if method == "reference" and args.reference_prompts is not None and i >= args.reference_prompts:
                    continue
                r = run_request(pair, method, prompt, args.max_tokens, profiler, args.turn_stops)
                runs.append(r)
                print(
                    f"[{i + 1}/{len(prompts)}] {method:9} {prompt['id']:16} {r['n_tokens']:4} tokens "
                    f"{r['n_tokens'] / r['wall_s']:6.1f} tok/s  int {r['interventions']}",
                    file=sys.stderr,
                )
        micro = micro_blend(pair, args.micro_repeats) if args.micro_repeats else None
        split = thread_split(pair, profiler, args, prompts) if args.split_prompts else None
        scale = scaling(pair, profiler, args, prompts) if args.scaling else None
    finally:
        if profiler:
            profiler.uninstall()
    summary = summarize(runs, wrapper_cost)
    results = {
        "config": {
            "threads": args.threads,
            "ctx": args.ctx,
            "max_tokens": args.max_tokens,
            "prompts": len(prompts),
            "base": pair.base.name,
            "guide": pair.guide.name,
            "methods": method_list,
            "turn_stops": args.turn_stops,
            "profile": profiler is not None,
            "wrapper_cost_us": 1e6 * wrapper_cost,
            "llama_cpp_python": llama_cpp.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "command": "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "prompt_ids": [p["id"] for p in prompts],
        },
        "summary": summary,
        "paired": {
            "blendin/base": paired_ratio(runs, "blendin", "base"),
            "blendin/base decode": paired_ratio(runs, "blendin", "base", decode=True),
            "blendin/reference": paired_ratio(runs, "blendin", "reference"),
            **{f"{m}/blendin": paired_ratio(runs, m, "blendin") for m in method_list if m not in METHODS},
        },
        "cold": cold,
        "micro": micro,
        "memory": memory,
        "memory_whole_benchmark": memory_report(pair),
        "thread_split": split,
        "scaling": scale,
        "elapsed_s": perf_counter() - started,
        "runs": runs,
    }
    md = report_md(results, [*METHODS, *(m for m in method_list if m not in METHODS)])
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


def write_speculation(args, argv, prompts: list[dict], started: float) -> int:
    results = speculation_bench(args, prompts)
    results["config"] = {
        "max_tokens": args.max_tokens,
        "prompts": len(prompts),
        "ctx": args.ctx,
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "llama_cpp_python": llama_cpp.__version__,
        "command": "python scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "prompt_ids": [p["id"] for p in prompts],
    }
    results["elapsed_s"] = perf_counter() - started
    print(results["md"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(results["md"])
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
