"""The probe child of cpu_kernels.py: load one model WITH llama.cpp's extra CPU buffers and decode.

    python -m blendin_local.backends.kernel_probe_child MODEL.gguf

Exit 0: the kernels ran. Death by a signal: they crash on this CPU. Exit 3: the file itself could
not be loaded (no verdict on the kernels). Its own module, so that the parent's import graph
never reaches it: the child runs the kernels, the parent only reads how the child ended.
"""

from __future__ import annotations

import sys

from blendin_local.backends.cpu_kernels import CHILD_LOAD_FAILED
from blendin_local.backends.llama import LlamaModel, LoadOptions
from blendin_local.errors import BlendinError


def probe_child(model: str) -> int:
    """The child's work: load with extra buffers, decode a batch and then single tokens."""
    try:
        llm = LlamaModel(model, LoadOptions(n_ctx=256, n_batch=64, repack="on"))
    except BlendinError as e:
        print(e, file=sys.stderr)
        return CHILD_LOAD_FAILED
    tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. One, two, three,", add_bos=llm.adds_bos)
    llm.begin_request(tokens)
    llm.logits(tokens)
    for _ in range(3):
        tokens.append(int(llm.logits(tokens)[0].argmax()))
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(probe_child(sys.argv[1]))
