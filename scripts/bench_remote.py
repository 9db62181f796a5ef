"""Throughput of the remote backend against the local one, default pair, greedy, 1 thread each.

Start the two servers first (llama-cpp-python's server, as tests/test_remote.py does):
    python -m llama_cpp.server --model $(blendin models path gemma3-270m) --port 18432 --n_threads 1 \
        --n_threads_batch 1 --logits_all true --flash_attn true --n_ctx 512 --verbose false &
    python -m llama_cpp.server --model $(blendin models path smollm2-135m-instruct) --port 18431 ... &
then: python scripts/bench_remote.py [BASE_URL GUIDE_URL]
"""

import sys
import time

from blendin_local.backends.llama import LoadOptions
from blendin_local.backends.registry import resolve_model
from blendin_local.backends.remote import RemoteModel, RemoteSpec
from blendin_local.backends.vocab_sources import open_vocab
from blendin_local.engine.generation import GenerationSettings
from blendin_local.pair import BlendPair, assemble_pair

PROMPTS = ("How do I make a cup of tea?", "Why is the sky blue?", "Write a haiku about the sea.")
base_url, guide_url = sys.argv[1:3] if len(sys.argv) > 2 else ("http://127.0.0.1:18432/v1", "http://127.0.0.1:18431/v1")
local = BlendPair.load(options=LoadOptions(n_ctx=512, n_threads=1))
remote = assemble_pair(
    RemoteModel(RemoteSpec(base_url, n_ctx=512), open_vocab(resolve_model("gemma3-270m"))),
    RemoteModel(RemoteSpec(guide_url, n_ctx=512), open_vocab(resolve_model("smollm2-135m-instruct"))),
)
for method in ("base", "guide", "blendin"):
    settings = GenerationSettings(method=method, max_tokens=32, stop_at_new_turn=False)
    for name, pair in (("local", local), ("remote", remote)):
        tokens, seconds = 0, 0.0
        for prompt in PROMPTS:
            started = time.perf_counter()
            result = pair.generate(prompt, settings)
            seconds += time.perf_counter() - started
            tokens += result.n_tokens
        extra = ""
        if name == "remote":
            extra = (
                f"  requests: base {pair.base.requests} ({pair.base.request_seconds:.1f} s),"
                f" guide {pair.guide.requests} ({pair.guide.request_seconds:.1f} s)"
            )
            for model in (pair.base, pair.guide):
                model.requests, model.request_seconds = 0, 0.0
        print(
            f"{method:8} {name:6} {tokens:4} tokens {seconds:6.1f} s {tokens / seconds:6.1f} tokens/s{extra}",
            flush=True,
        )
