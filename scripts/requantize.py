#!/usr/bin/env python
"""Write a GGUF model in another quantization, offline, with llama.cpp's own quantizer.

    python scripts/requantize.py SmolLM2-135M-Instruct.Q4_1.gguf smollm2-135m-instruct-q4_0.gguf --type Q4_0

Why: llama.cpp's CPU backend evaluates a batch of tokens much faster for some formats than for
others (it has batched kernels for Q4_0 and Q8_0, not for Q4_1), and BlendIn's guide catches up
in batches; docs/performance.md measures it. Requantizing from an already quantized file adds
rounding error: the result is a different model, whose texts differ from the original's.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
from pathlib import Path

import llama_cpp.llama_cpp as llama

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from blendin_local.backends.llama import init_backend  # noqa: E402

TYPES = {
    "Q4_0": llama.LLAMA_FTYPE_MOSTLY_Q4_0,
    "Q8_0": llama.LLAMA_FTYPE_MOSTLY_Q8_0,
    "Q4_K_M": llama.LLAMA_FTYPE_MOSTLY_Q4_K_M,
    "Q5_0": llama.LLAMA_FTYPE_MOSTLY_Q5_0,
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path)
    ap.add_argument("target", type=Path)
    ap.add_argument("--type", choices=sorted(TYPES), default="Q4_0")
    ap.add_argument("-t", "--threads", type=int, default=0, help="0: all cores")
    args = ap.parse_args(argv)
    if not args.source.is_file():
        print(f"error: {args.source}: no such file", file=sys.stderr)
        return 1
    init_backend()  # llama.cpp's log lines stay off stderr
    params = llama.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = TYPES[args.type], True, args.threads
    status = llama.llama_model_quantize(str(args.source).encode(), str(args.target).encode(), ctypes.byref(params))
    if status != 0:
        print(f"error: llama.cpp could not quantize {args.source} (status {status})", file=sys.stderr)
        return 1
    print(f"{args.target}: {args.target.stat().st_size / 2**20:.1f} MiB ({args.type})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
