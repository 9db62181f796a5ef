"""How the benchmark reports (scripts/bench.py runs it): the summary of its runs per method,
the markdown report with the targets, and the comparison of two runs' generated texts.

Reads only the results' JSON-shaped data: `--compare` and the report need no model.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

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
            "tokens_per_s_p10": pct(tps, 10),
            "tokens_per_s_p90": pct(tps, 90),
            "tokens_per_s_min": min(tps) if tps else 0.0,
            "tokens_per_s_max": max(tps) if tps else 0.0,
            "latency_p50_ms": 1e3 * pct(gaps, 50),
            "latency_p95_ms": 1e3 * pct(gaps, 95),
            "ttft_median_ms": 1e3 * statistics.median(ttft) if ttft else float("nan"),
            "ttft_p95_ms": 1e3 * pct(ttft, 95),
            "interventions": n_int,
            "intervention_rate": n_int / n_tok if n_tok else 0.0,
            "parts_s": parts,
            "detail_s": dict(sorted(times.items(), key=lambda kv: -kv[1])),
            "calls": dict(calls),
            "engine_overhead_share": (wall - parts["base forward"] - parts["guide forward"] - instr) / wall
            if wall
            else 0.0,
            "engine_overhead_share_raw": (wall - parts["base forward"] - parts["guide forward"]) / wall
            if wall
            else 0.0,
            "blend_math_ms_per_intervention": 1e3 * parts["bridge + blend math"] / n_int if n_int else None,
            "base_tokens_evaluated_per_token": calls.get("tokens evaluated: base forward", 0) / n_tok if n_tok else 0.0,
            "guide_tokens_evaluated_per_token": calls.get("tokens evaluated: guide forward", 0) / n_tok
            if n_tok
            else 0.0,
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
    return {
        "median": statistics.median(ratios) if ratios else float("nan"),
        "p10": pct(ratios, 10),
        "p90": pct(ratios, 90),
        "n": len(ratios),
    }


# -- report ------------------------------------------------------------------------------------


def thread_split_table(t: dict) -> str:
    counts = t["counts"]
    lines = [
        "### Thread split between the two models (median tokens/s over prompts; ratios per prompt, median)",
        "",
        "| method | base threads | guide threads | tokens/s | "
        + " | ".join(f"/ base-only at {b}" for b in counts)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(counts),
    ]
    for r in t["rows"]:
        lines.append(
            f"| {r['method']} | {r['base_threads']} | {r['guide_threads'] or ''} | {r['tokens_per_s_median']:.1f} | "
            + " | ".join(f"{r[f'over_base_{b}']:.2f}" for b in counts)
            + " |"
        )
    return "\n".join(lines)


def scaling_tables(s: dict) -> str:
    lines = [
        "### Output length (end-of-generation disabled; cumulative over one run per prompt)",
        "",
        "| method | tokens | tokens/s (median over prompts) | ms/token in this window | engine overhead ms/token in window |",
        "|---|---:|---:|---:|---:|",
    ]
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
                lines.append(
                    f"| {method} | {hi} | {statistics.median(rates):.1f} | {statistics.median(win):.2f} "
                    f"| {statistics.median(ovh):.3f} |"
                )
    lines += [
        "",
        "### Context length (32 new tokens)",
        "",
        "| method | prompt tokens | time to first token ms | decode ms/token (median) | engine overhead ms/token |",
        "|---|---:|---:|---:|---:|",
    ]
    for method, rows in s["context_length"].items():
        for r in rows:
            lines.append(
                f"| {method} | {r['prompt_tokens']} | {r['ttft_ms']:.0f} | {r['decode_ms_per_token']:.2f} "
                f"| {r['engine_overhead_ms_per_token']:.3f} |"
            )
    lines += [
        "",
        "### Memory against n_ctx (fresh process: load, blendin on 2 prompts x 64 tokens)",
        "",
        "| n_ctx | KV caches MiB (base + guide) | files + KV MiB | RSS after load MiB | peak RSS MiB | peak / (files + KV) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n_ctx, m in s["memory_vs_n_ctx"].items():
        kv = sum(m["kv_bytes"].values())
        lines.append(
            f"| {n_ctx} | {kv / 2**20:.0f} | {m['files_plus_kv'] / 2**20:.0f} | {m['rss_after_load'] / 2**20:.0f} "
            f"| {m['peak_rss'] / 2**20:.0f} | {m['peak_rss'] / m['files_plus_kv']:.2f} |"
        )
    return "\n".join(lines)


def fmt_table(summary: dict, methods_order) -> str:
    lines = [
        "| method | tokens | tokens/s median | p10-p90 (min-max) | aggregate tokens/s | after 1st token | latency p50 / p95 ms "
        "| TTFT median ms | intervention rate |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for m in methods_order:
        if m not in summary:
            continue
        s = summary[m]
        lines.append(
            f"| {m} | {s['tokens']} | {s['tokens_per_s_median']:.1f} | {s['tokens_per_s_p10']:.1f}-{s['tokens_per_s_p90']:.1f} "
            f"({s['tokens_per_s_min']:.1f}-{s['tokens_per_s_max']:.1f}) | {s['tokens_per_s_aggregate']:.1f} "
            f"| {s['decode_tokens_per_s_aggregate']:.1f} "
            f"| {s['latency_p50_ms']:.1f} / {s['latency_p95_ms']:.1f} | {s['ttft_median_ms']:.0f} "
            f"| {100 * s['intervention_rate']:.1f}% |"
        )
    lines += [
        "",
        "Tokens each model evaluated per generated token (prompt included), and dense mixtures built:",
        "",
        "| method | base | guide | dense mixtures / interventions |",
        "|---|---:|---:|---:|",
    ]
    for m in methods_order:
        if m in summary:
            s = summary[m]
            lines.append(
                f"| {m} | {s['base_tokens_evaluated_per_token']:.2f} | {s['guide_tokens_evaluated_per_token']:.2f} "
                f"| {s['dense_mixtures']} / {s['interventions']} |"
            )
    lines += [
        "",
        "Where the time goes (share of each method's wall time; exclusive timers):",
        "",
        "| method | " + " | ".join(PARTS) + " | instrumentation (est.) | engine overhead (all but forwards) |",
        "|---|" + "---:|" * (len(PARTS) + 2),
    ]
    for m in methods_order:
        if m not in summary:
            continue
        s = summary[m]
        wall = s["wall_s"]
        cells = [f"{100 * s['parts_s'][p] / wall:.1f}%" for p in PARTS]
        lines.append(
            f"| {m} | " + " | ".join(cells) + f" | {100 * s['parts_s']['instrumentation (estimated)'] / wall:.1f}% "
            f"| {100 * s['engine_overhead_share']:.1f}% |"
        )
    lines += [
        "",
        "Per token, in ms (wall / tokens; exclusive timers in detail):",
        "",
        "| method | wall | " + " | ".join(ROLLUP) + " |",
        "|---|---:|" + "---:|" * len(ROLLUP),
    ]
    for m in methods_order:
        if m not in summary:
            continue
        s = summary[m]
        n = max(1, s["tokens"])
        lines.append(
            f"| {m} | {1e3 * s['wall_s'] / n:.2f} | "
            + " | ".join(f"{1e3 * s['detail_s'].get(k, 0.0) / n:.3f}" for k in ROLLUP)
            + " |"
        )
    return "\n".join(lines)


def targets(results: dict) -> list[tuple[str, str, str, bool | None]]:
    s = results["summary"]
    rows = []
    if "blendin" in s and "base" in s:
        pr = results["paired"]["blendin/base"]
        agg = s["blendin"]["tokens_per_s_aggregate"] / s["base"]["tokens_per_s_aggregate"]
        dec = results["paired"]["blendin/base decode"]
        rows.append(
            (
                "BlendIn throughput / base-only (gamma 0.4)",
                ">= 0.8",
                f"{pr['median']:.2f} end to end, median of per-prompt ratios (p10-p90 {pr['p10']:.2f}-{pr['p90']:.2f}); "
                f"{agg:.2f} aggregate; after the first token {dec['median']:.2f}",
                pr["median"] >= 0.8,
            )
        )
    if "blendin" in s:
        b = s["blendin"]
        rows.append(
            (
                "engine overhead (all but the two forwards) / BlendIn wall",
                "<= 5%",
                f"{100 * b['engine_overhead_share']:.1f}% ({100 * b['engine_overhead_share_raw']:.1f}% with the timers' own cost)",
                b["engine_overhead_share"] <= 0.05,
            )
        )
        if b["blend_math_ms_per_intervention"] is not None:
            rows.append(
                (
                    "bridge + blend math per intervention (262k base vocabulary)",
                    "<= 1 ms",
                    f"{b['blend_math_ms_per_intervention']:.3f} ms in generation"
                    + (f"; {results['micro']['per_intervention_ms']:.3f} ms isolated" if results.get("micro") else ""),
                    b["blend_math_ms_per_intervention"] <= 1.0,
                )
            )
    if "blendin" in s and "reference" in s:
        ratio = results["paired"]["blendin/reference"]
        rows.append(
            (
                "BlendIn throughput / reference-style",
                ">= 5x",
                f"{ratio['median']:.1f}x median per prompt; {s['blendin']['tokens_per_s_aggregate'] / s['reference']['tokens_per_s_aggregate']:.1f}x aggregate",
                ratio["median"] >= 5,
            )
        )
    if results.get("cold"):
        c = results["cold"]
        rows.append(
            (
                "cold start: both models + cached bridge",
                "<= 3 s",
                f"{c['load_s']:.2f} s (BlendPair.load, median of {c['runs']}); {c['process_s']:.2f} s whole process with imports",
                c["load_s"] <= 3.0,
            )
        )
        rows.append(
            (
                "building the bridge from scratch",
                "<= 10 s",
                f"{c['bridge_scratch_s']:.2f} s",
                c["bridge_scratch_s"] <= 10,
            )
        )
    m, whole = results["memory"], results["memory_whole_benchmark"]
    rows.append(
        (
            "peak RSS / (GGUF files + KV caches)",
            "<= 1.3x",
            f"{m['peak_over_files_plus_kv']:.2f}x ({m['peak_rss'] / 2**20:.0f} MiB / {m['files_plus_kv'] / 2**20:.0f} MiB at n_ctx {m['n_ctx']}: "
            f"a fresh process loading the pair and running BlendIn; the whole benchmark process peaked at "
            f"{whole['peak_rss'] / 2**20:.0f} MiB)",
            m["peak_over_files_plus_kv"] <= 1.3,
        )
    )
    return rows


def memory_table(m: dict) -> str:
    """Where a BlendIn process's resident memory goes, phase by phase (MiB)."""
    lines = [
        f"Memory of a fresh BlendIn process at n_ctx {m['n_ctx']} (MiB; anonymous = heap and buffers, "
        "file = mapped GGUF files and shared libraries):",
        "",
        "| after | RSS | anonymous | file | added |",
        "|---|---:|---:|---:|---:|",
    ]
    previous = 0
    for phase, v in m["phases"].items():
        lines.append(
            f"| {phase} | {v['VmRSS'] / 2**20:.0f} | {v['RssAnon'] / 2**20:.0f} | {v['RssFile'] / 2**20:.0f} "
            f"| {(v['VmRSS'] - previous) / 2**20:+.0f} |"
        )
        previous = v["VmRSS"]
    kv = ", ".join(f"{name} {b / 2**20:.0f}" for name, b in m["kv_bytes"].items())
    files = ", ".join(f"{name} {b / 2**20:.0f}" for name, b in m["gguf_bytes"].items())
    lines += [
        "",
        f"Budget: GGUF files ({files}) + KV caches ({kv}) = {m['files_plus_kv'] / 2**20:.0f} MiB; "
        f"peak {m['peak_rss'] / 2**20:.0f} MiB = {m['peak_over_files_plus_kv']:.2f}x.",
    ]
    return "\n".join(lines)


def report_md(results: dict, methods_order) -> str:
    cfg = results["config"]
    lines = [
        f"Benchmark: {cfg.get('base', 'default base')} + {cfg.get('guide', 'default guide')}, {cfg['prompts']} prompts x {cfg['max_tokens']} new tokens, greedy, threads {cfg['threads']} per model, "
        f"n_ctx {cfg['ctx']}, turn stops {'on' if cfg['turn_stops'] else 'off'}, methods interleaved (order rotated per prompt); "
        f"{cfg['cpu']}, llama-cpp-python {cfg['llama_cpp_python']}, numpy {cfg['numpy']}; "
        f"total {results['elapsed_s'] / 60:.1f} min.",
        "",
        "```",
        cfg["command"],
        "```",
        "",
        fmt_table(results["summary"], methods_order),
        "",
    ]
    if results.get("micro"):
        mi = results["micro"]
        lines += [
            f"Isolated bridge + blend math (synthetic distributions, {mi['repeats']} repeats): "
            + ", ".join(f"{k} {v:.3f} ms" for k, v in mi["parts_ms"].items())
            + f"; total {mi['per_intervention_ms']:.3f} ms per intervention.",
            "",
        ]
    lines += ["| target | goal | measured | met |", "|---|---|---|---|"]
    for name, goal, measured, met in targets(results):
        lines.append(f"| {name} | {goal} | {measured} | {'met' if met else 'NOT met'} |")
    lines += ["", memory_table(results["memory"])]
    if results.get("thread_split"):
        lines += ["", thread_split_table(results["thread_split"])]
    if results.get("scaling"):
        lines += ["", scaling_tables(results["scaling"])]
    return "\n".join(lines) + "\n"


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
