"""scripts/requantize.py writes a loadable model in another format, offline."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import OPTIONS

from blendin_local.backends.gguf_file import check_gguf_file
from blendin_local.backends.registry import load_registry, resolve_model
from blendin_local.engine.generation import GenerationSettings
from blendin_local.pair import BlendPair

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "requantize.py"


@pytest.mark.models
def test_a_requantized_guide_loads_and_blends(tmp_path, default_pair):
    source = resolve_model("smollm2-135m-instruct", load_registry())
    target = tmp_path / "guide-q4_0.gguf"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(source), str(target), "--type", "Q4_0", "-t", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and "(Q4_0)" in done.stdout
    check_gguf_file(target)
    pair = BlendPair.load(default_pair.base.path, target, options=OPTIONS)
    try:
        # Same tokenizer as the original guide, so the bridge is the same one.
        assert pair.guide.pieces == default_pair.guide.pieces
        assert pair.guide.metadata("general.file_type") == "2"  # LLAMA_FTYPE_MOSTLY_Q4_0
        result = pair.generate("What is the capital of France?", GenerationSettings(max_tokens=8))
        assert result.n_tokens > 0 and result.text
    finally:
        pair.close()


def test_a_missing_source_is_one_error_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none.gguf"), str(tmp_path / "out.gguf")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "no such file" in done.stderr
