"""The trial load of gguf_file.py, in its own process: load the file as LlamaModel does and decode.

    python -m blendin_local.backends.gguf_trial_child MODEL.gguf

Exit 0: llama.cpp loads and runs it. Exit 3: llama.cpp refused it (the line is on stderr). Death
by a signal: llama.cpp crashed on it, which the parent reports as one line. Its own module, so
that gguf_file.py, which every load goes through, never imports the loader it guards.
"""

from __future__ import annotations

import sys
from pathlib import Path

from blendin_local.backends.gguf_file import TRIAL_REFUSED, check_gguf_header, enter_trial_process
from blendin_local.backends.llama import LlamaModel, LoadOptions
from blendin_local.errors import BlendinError


def trial_child(path: str) -> int:
    """The trial's own process: load like LlamaModel does and decode one token (the vocabulary
    alone for a file without tensors, as a vocabulary source is)."""
    enter_trial_process()
    try:
        vocab_only = check_gguf_header(Path(path)).n_tensors == 0
        model = LlamaModel(path, LoadOptions(n_ctx=64, n_batch=64, n_threads=1, vocab_only=vocab_only, repack="off"))
        if not vocab_only:
            tokens = model.tokenize(b"Hello", add_bos=model.adds_bos) or [max(model.bos_id, 0)]
            model.begin_request(tokens)
            model.logits(tokens)
        model.close()
    except BlendinError as e:
        print(e, file=sys.stderr)
        return TRIAL_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(trial_child(sys.argv[1]))
