#!/usr/bin/env python
"""Greedy texts and speed with llama.cpp's extra CPU buffers on and off (`--repack on|off`).

    python scripts/repack_agreement.py -t 2 -n 64 --methods base,blendin

The fallback of cpu_kernels.py loads models without the AMX/repacked weight buffers. Their
kernels round differently, so greedy texts may part at near ties; this measures how often, and
what the fallback costs in tokens/s, side by side in one process (prompts interleaved, the
order of the two loads alternating). Run it with a llama.cpp build whose extra buffers work on
this CPU (`blendin doctor` says whether they do).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from blendin_local.backends.llama import LoadOptions  # noqa: E402
from blendin_local.engine.generation import GenerationSettings  # noqa: E402
from blendin_local.pair import BlendPair  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from prompts import INVARIANT_PROMPTS  # noqa: E402


def first_difference(a: str, b: str) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-t", "--threads", type=int, default=None)
    ap.add_argument("-n", "--max-tokens", type=int, default=64)
    ap.add_argument("--methods", default="base,blendin")
    ap.add_argument("--prompts", type=int, default=len(INVARIANT_PROMPTS))
    ap.add_argument("--out", type=Path, help="write the per-prompt results as JSON")
    args = ap.parse_args(argv)

    pairs = {
        setting: BlendPair.load(options=LoadOptions(n_ctx=1024, n_threads=args.threads, repack=setting))
        for setting in ("on", "off")
    }
    rows = []
    speeds: dict[tuple[str, str], list[float]] = {}
    for i, prompt in enumerate(INVARIANT_PROMPTS[: args.prompts]):
        for method in args.methods.split(","):
            settings = GenerationSettings(method=method, max_tokens=args.max_tokens)
            texts = {}
            for setting in ("on", "off") if i % 2 == 0 else ("off", "on"):
                result = pairs[setting].generate(prompt, settings)
                texts[setting] = result.text
                speeds.setdefault((method, setting), []).append(result.tokens_per_s)
            diff = first_difference(texts["on"], texts["off"])
            rows.append(
                {
                    "prompt": prompt,
                    "method": method,
                    "same": diff is None,
                    "first_difference": diff,
                    "on": texts["on"],
                    "off": texts["off"],
                }
            )
            print(f"{method:8} {'same' if diff is None else f'differs at char {diff}':22} {prompt[:50]!r}", flush=True)

    print()
    for method in args.methods.split(","):
        mine = [r for r in rows if r["method"] == method]
        on, off = statistics.median(speeds[(method, "on")]), statistics.median(speeds[(method, "off")])
        print(
            f"{method}: identical greedy texts {sum(r['same'] for r in mine)}/{len(mine)};"
            f" median tokens/s on {on:.1f}, off {off:.1f} (off/on {off / on:.2f})"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
