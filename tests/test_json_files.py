"""Small JSON files that only help: whatever the file holds, it reads as an object or as empty, and
every cache built on it goes on working (the CPU probe's verdicts, the sha256 stamps)."""

import json
from dataclasses import asdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.backends import registry as reg
from blendin_local.backends.cpu_kernels import ProbeVerdict, read_cached, write_cached
from blendin_local.json_files import MAX_CACHE_BYTES, read_json_object, write_json_cache

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
def test_any_file_reads_as_a_dict(tmp_path, content):
    path = tmp_path / "cache.json"
    path.write_bytes(content)
    entries = read_json_object(path)
    try:
        parsed = json.loads(content)
    except (ValueError, RecursionError):
        parsed = None
    assert entries == (parsed if isinstance(parsed, dict) else {})


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
