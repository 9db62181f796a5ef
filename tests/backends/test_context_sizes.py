"""Contexts below llama.cpp's padding: batches and limits follow what llama.cpp allocated.

llama.cpp rounds a context up (16 -> 256, 300 -> 512) but caps the batch at the requested size;
a batch above that cap used to abort the whole process (GGML_ASSERT n_tokens_all <= n_batch).
"""

import subprocess
import sys

import pytest

from blendin_local.backends.llama import LlamaModel, LoadOptions
from blendin_local.backends.registry import resolve_model

pytestmark = pytest.mark.models


def blendin(*args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "blendin_local", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("n_ctx", [16, 300])
def test_batches_fit_what_llama_cpp_allocated(n_ctx):
    model = LlamaModel(resolve_model("smollm2-135m-instruct"), LoadOptions(n_ctx=n_ctx, n_threads=1))
    try:
        assert model.n_batch <= n_ctx < model.n_ctx  # the context was padded, the batch was not
        tokens = list(range(100, 100 + model.n_ctx - 1))  # a prompt of many batches
        model.begin_request(tokens)
        assert model.logits(tokens).shape == (1, model.n_vocab)
    finally:
        model.close()


def test_a_tiny_context_generates():
    done = blendin("generate", "-n", "4", "-t", "1", "-c", "16", "Hi")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_a_long_prompt_in_a_padded_context_answers_or_is_refused_in_one_line():
    fits = blendin("generate", "-n", "4", "-t", "1", "-c", "300", "--method", "base", stdin=" ".join(["word"] * 340))
    assert fits.returncode == 0, fits.stderr
    too_long = blendin("generate", "-n", "4", "-t", "1", "-c", "300", stdin=" ".join(["word"] * 700))
    assert too_long.returncode == 1
    errors = [line for line in too_long.stderr.splitlines() if line.startswith("blendin: error")]
    assert len(errors) == 1 and "context" in errors[0]
