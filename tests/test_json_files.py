"""Small JSON files that only help: whatever the file holds, it reads as an object or as empty, and
every cache built on it goes on working (the CPU probe's verdicts, the sha256 stamps)."""

import json
import typing
from dataclasses import asdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.backends import registry as reg
from blendin_local.backends.cpu_kernels import ProbeVerdict, read_cached, write_cached
from blendin_local.backends.gguf_file import GgufHeader
from blendin_local.json_files import MAX_CACHE_BYTES, dataclass_from_json, read_json_object, write_json_cache

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8).filter(lambda k: k != "key"), inner, max_size=4)
    ),
    max_leaves=12,
)
CONTENT = st.one_of(
    st.binary(max_size=300),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),  # deeper than the parser recurses
)
HEALTH = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(max_examples=200, **HEALTH)
@given(content=CONTENT)
def test_any_file_reads_as_an_object_without_an_exception(tmp_path, content):
    path = tmp_path / "cache.json"
    path.write_bytes(content)
    assert isinstance(read_json_object(path), dict)


@settings(max_examples=100, **HEALTH)
@given(entries=st.dictionaries(st.text(max_size=8), JSON, max_size=6))
def test_an_object_written_reads_back(tmp_path, entries):
    write_json_cache(tmp_path / "cache.json", entries)
    assert read_json_object(tmp_path / "cache.json") == entries


def test_missing_oversized_and_unwritable(tmp_path):
    assert read_json_object(tmp_path / "none.json") == {}
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"k": "x" * MAX_CACHE_BYTES}))
    assert read_json_object(big) == {}
    write_json_cache(tmp_path / "c.json", {"a": [1, 2]})
    assert read_json_object(tmp_path / "c.json") == {"a": [1, 2]}
    (tmp_path / "dir.json").mkdir()
    write_json_cache(tmp_path / "dir.json", {"a": 1})  # a folder in the way: no error, no cache
    assert read_json_object(tmp_path / "dir.json") == {}


VERDICT = ProbeVerdict(runs=False, outcome="crash", detail="SIGSEGV", seconds=1.5, model="m.gguf")


@settings(max_examples=150, **HEALTH)
@given(content=CONTENT, entry=JSON)
def test_a_damaged_probe_cache_costs_a_probe_and_nothing_else(tmp_path, content, entry):
    """Never an exception, and an entry is used only when every field has its type: a damaged
    'runs' must not switch on the kernels the probe found crashing."""
    path = tmp_path / "cpu_probe.json"
    path.write_bytes(content)
    assert read_cached(tmp_path, "key") is None  # no such entry in any content of CONTENT
    path.write_text(json.dumps({"key": entry}))
    assert read_cached(tmp_path, "key") is None
    damaged = {**asdict(VERDICT), "runs": entry}
    path.write_text(json.dumps({"key": damaged}))
    assert read_cached(tmp_path, "key") == (ProbeVerdict(**damaged) if isinstance(entry, bool) else None)
    write_cached(tmp_path, "key", VERDICT)
    assert read_cached(tmp_path, "key") == VERDICT


@settings(max_examples=60, **HEALTH)
@given(content=CONTENT)
def test_a_damaged_stamp_file_costs_a_hash_and_nothing_else(tmp_path, monkeypatch, content):
    monkeypatch.setenv(reg.MODELS_DIR_ENV, str(tmp_path / "cache"))
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(100))
    (tmp_path / "cache").mkdir(exist_ok=True)
    (tmp_path / "cache" / "verified.json").write_bytes(content)
    reg.verify_sha256(model, reg.file_sha256(model))
    assert str(model.resolve()) in read_json_object(tmp_path / "cache" / "verified.json")


SCALARS = st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=False) | st.text(max_size=8)
HEADER = GgufHeader(4, 3, 20, "gemma3", 4096, 8192, name="Gemma", file_type=15, n_vocab=262144, has_chat_template=True)


@settings(max_examples=300, **HEALTH)
@given(
    which=st.sampled_from([VERDICT, HEADER]),
    changes=st.dictionaries(st.sampled_from([*asdict(HEADER), *asdict(VERDICT), "extra"]), SCALARS | JSON, max_size=3),
    dropped=st.sets(st.sampled_from([*asdict(HEADER), *asdict(VERDICT)]), max_size=2),
)
def test_a_cache_entry_gives_its_dataclass_only_with_every_field_of_its_type(which, changes, dropped):
    entry = {k: v for k, v in {**asdict(which), **changes}.items() if k not in dropped}
    made = dataclass_from_json(type(which), json.loads(json.dumps(entry)))
    hints = typing.get_type_hints(type(which))
    if made is None:
        return
    for name, hint in hints.items():  # each field of its declared type; a bool never stands for a number
        value = getattr(made, name)
        options = typing.get_args(hint) or (hint,)
        assert any(
            (value is None and option is type(None))
            or (option is float and type(value) in (int, float))
            or (option is not type(None) and type(value) is option)
            for option in options
        ), (name, value, hint)
    assert dataclass_from_json(type(which), asdict(made)) == made


def test_the_written_entries_read_back_and_damaged_ones_do_not():
    assert dataclass_from_json(GgufHeader, json.loads(json.dumps(asdict(HEADER)))) == HEADER
    assert dataclass_from_json(GgufHeader, {**asdict(HEADER), "file_type": [1]}) is None
    assert dataclass_from_json(GgufHeader, {**asdict(HEADER), "n_vocab": True}) is None
    assert dataclass_from_json(ProbeVerdict, {**asdict(VERDICT), "runs": "no"}) is None
    assert dataclass_from_json(ProbeVerdict, {**asdict(VERDICT), "seconds": 2}) == ProbeVerdict(
        runs=False, outcome="crash", detail="SIGSEGV", seconds=2, model="m.gguf"
    )
    minimal = {
        k: v
        for k, v in asdict(HEADER).items()
        if k in ("version", "n_tensors", "n_kv", "architecture", "data_start", "data_end")
    }
    assert dataclass_from_json(GgufHeader, minimal) == GgufHeader(4, 3, 20, "gemma3", 4096, 8192)
    assert dataclass_from_json(GgufHeader, [asdict(HEADER)]) is None
