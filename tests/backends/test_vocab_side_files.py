"""The JSON files beside a tokenizer (tokenizer_config.json, generation_config.json) are the
user's files and optional: whatever they hold, the vocabulary loads, and only valid entries
count (a broken file reads as absent)."""

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.backends.vocab_sources import HFTokenizerVocab

tokenizers = pytest.importorskip("tokenizers")

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 500) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)
KEYS = st.sampled_from(["bos_token", "eos_token", "add_bos_token", "chat_template", "eos_token_id", "name", "content"])
CONFIG = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(KEYS, JSON, max_size=5).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        ["Hello there, how are you?", "The answer is 42.", "Tea needs hot water."],
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tok.save(str(path))
    return path


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=CONFIG, generation=CONFIG)
def test_any_side_files_load_and_give_valid_ids(tokenizer_file, config, generation):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.json"
        shutil.copy(tokenizer_file, path)
        (path.parent / "tokenizer_config.json").write_bytes(config)
        (path.parent / "generation_config.json").write_bytes(generation)
        vocab = HFTokenizerVocab(path)
        assert all(0 <= i < vocab.n_vocab for i in vocab.eog_ids)
        assert -1 <= vocab.bos_id < vocab.n_vocab and -1 <= vocab.eos_id < vocab.n_vocab
        assert isinstance(vocab.adds_bos, bool)
        template = vocab.metadata("tokenizer.chat_template")
        assert template is None or isinstance(template, str)
        assert b"".join(vocab.pieces[t] for t in vocab.tokenize(b"The answer")) == b"The answer"


def test_a_named_template_list_with_odd_names_picks_a_string_name(tokenizer_file, tmp_path):
    path = tmp_path / "tokenizer.json"
    shutil.copy(tokenizer_file, path)
    templates = [{"name": ["x"], "template": "bad"}, {"name": "tool_use", "template": "tools"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": templates, "eos_token": "<|im_end|>"}))
    vocab = HFTokenizerVocab(path)
    assert vocab.metadata("tokenizer.chat_template") == "tools"
    assert vocab.eos_id == tokenizers.Tokenizer.from_file(str(path)).token_to_id("<|im_end|>")
