"""Corrupt GGUF files end in one line and exit code 1, never in a traceback or a signal (issue 11).

Hypothesis generates three families of files: bytes after a GGUF version-3 magic (random, and
shaped like metadata and tensor records so that the later checks are reached too), prefixes of
the real guide file cut at random points, and random bit flips in its header. Each goes through
check_gguf_header, the header walk of the check every load runs first, in this process (the
bulk: hundreds of files in seconds). Every file the walk lets through is then loaded and decoded
by llama.cpp in a child process, which must run it or refuse it in one line; where llama.cpp
kills the child instead, check_gguf_file's trial load must turn that into one line. A few files
of each family go through the real command line.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.backends import gguf_file
from blendin_local.backends.gguf_file import check_gguf_file, check_gguf_header
from blendin_local.backends.registry import MODELS_DIR_ENV, resolve_model
from blendin_local.errors import BlendinError

GUIDE = resolve_model("smollm2-135m-instruct")
GGUF_V3 = b"GGUF" + struct.pack("<I", 3)
HEADER = check_gguf_header(GUIDE)
HEADER_BYTES = GUIDE.read_bytes()[: HEADER.data_start]
# The tensor records close the header: flips there reach the shape, type and offset checks.
TENSOR_INFO_START = HEADER_BYTES.index(struct.pack("<Q", 17) + b"token_embd.weight")
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
# The CPU-kernel probe (cpu_kernels.py) is not under test here, and a probe child per command
# would double the time; without repacked kernels the loads are the same on every CPU.
# GGML_NO_BACKTRACE: a child llama.cpp aborts ends at once, without gdb printing its stack.
ENV = {**os.environ, "BLENDIN_REPACK": "off", "GGML_NO_BACKTRACE": "1"}
# Each test counts the files it generated: the issue asks for at least 500 in all.
GENERATED: dict[str, int] = {}


@pytest.fixture(autouse=True)
def own_models_folder(monkeypatch, tmp_path):
    """check_gguf_file remembers passed files in the models folder: not the user's, here. (The
    command-line runs keep it: they load the default base model from it.)"""
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "models"))


def refusal(path: Path) -> str | None:
    """check_gguf_file's one line for a file it refuses; None if it lets the file through."""
    try:
        check_gguf_header(path)
    except BlendinError as e:
        line = str(e)
        assert line.startswith(f"{path}: ") and "\n" not in line and "\r" not in line, line
        return line
    return None


# -- llama.cpp on the files the check lets through ---------------------------------------------

LOADER = r"""
import json, sys
from blendin_local.backends import gguf_file
from blendin_local.errors import BlendinError
from blendin_local.backends.llama import LlamaModel, LoadOptions

gguf_file._trial_running = True  # llama.cpp itself is under test here, not check_gguf_file's trial load
for job in json.load(sys.stdin):
    with open(job["path"], "r+b") as f:
        for offset, mask in job["flips"]:
            f.seek(offset); byte = f.read(1)[0]; f.seek(offset); f.write(bytes([byte ^ mask]))
    print(json.dumps({"start": True}), flush=True)
    try:
        model = LlamaModel(job["path"], LoadOptions(n_ctx=64, n_batch=64, n_threads=1))
        tokens = model.tokenize(b"Hello", add_bos=model.adds_bos) or [0]
        model.begin_request(tokens)
        model.logits(tokens)
        model.close()
        outcome = {"ran": True}
    except BlendinError as e:
        outcome = {"refused": str(e)}
    except Exception as e:
        outcome = {"error": f"{type(e).__name__}: {e}"}
    with open(job["path"], "r+b") as f:
        for offset, mask in reversed(job["flips"]):
            f.seek(offset); byte = f.read(1)[0]; f.seek(offset); f.write(bytes([byte ^ mask]))
    print(json.dumps(outcome), flush=True)
"""


def load_in_llama_cpp(jobs: list[dict], restore=lambda: None) -> list[dict]:
    """Load and decode each job's file ({"path", "flips": [[offset, xor mask]]}, the flips applied
    for that load only) in a child, which must run it or refuse it in one line. llama.cpp aborts
    the process on some metadata (a bit flip in llama.block_count does it): a file that kills
    the child must then be one line through check_gguf_file, whose trial load is there for that.
    `restore` undoes the flips a dead child left in place."""
    outcomes: list[dict] = []
    while jobs:
        child = subprocess.run(
            [sys.executable, "-c", LOADER], input=json.dumps(jobs).encode(), capture_output=True, env=ENV, timeout=600
        )
        assert "Traceback" not in child.stderr.decode(), child.stderr.decode()[-3000:]
        records = [json.loads(line) for line in child.stdout.decode().splitlines() if line.startswith("{")]
        done = [r for r in records if "start" not in r]
        errors = [o for o in done if "error" in o]
        assert not errors, errors[:5]
        assert all("ran" in o or "\n" not in o["refused"] for o in done), done
        outcomes += done
        if child.returncode == 0:
            assert len(done) == len(jobs)
            return outcomes
        assert child.returncode < 0, child.stderr.decode()[-3000:]  # killed by a signal, not a Python error
        restore()
        killer = jobs[len(done)]
        flip(Path(killer["path"]), killer["flips"])
        try:
            with pytest.raises(BlendinError, match=r"llama.cpp crashed \(SIG") as refused:
                check_gguf_file(Path(killer["path"]))
        finally:
            restore()
        outcomes.append({"crashed": str(refused.value)})
        jobs = jobs[len(done) + 1 :]
    return outcomes


# -- the three families -------------------------------------------------------------------------


def record(key: bytes, value_type: int, value: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<I", value_type) + value


def string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


small_lengths = st.one_of(st.integers(0, 80), st.integers(0, 2**64 - 1))
metadata = st.builds(
    record,
    st.binary(min_size=0, max_size=24) | st.sampled_from([b"general.alignment", b"general.architecture"]),
    st.integers(0, 14) | st.integers(0, 2**32 - 1),
    st.one_of(
        st.binary(max_size=24),
        st.builds(lambda n, rest: struct.pack("<Q", n) + rest, small_lengths, st.binary(max_size=24)),
        st.builds(
            lambda t, n, rest: struct.pack("<IQ", t, n) + rest,
            st.integers(0, 13),
            small_lengths,
            st.binary(max_size=64),
        ),
    ),
)
tensors = st.builds(
    lambda name, dims, ggml_type, offset: (
        string(name)
        + struct.pack("<I", len(dims))
        + b"".join(struct.pack("<q", d) for d in dims)
        + struct.pack("<iQ", ggml_type, offset)
    ),
    st.binary(max_size=70),
    st.lists(st.integers(-2, 2**16) | st.integers(-(2**63), 2**63 - 1), max_size=5),
    st.integers(-1, 45),
    st.sampled_from([0, 32, 64]) | st.integers(0, 2**64 - 1),
)
shaped_headers = st.builds(
    lambda kvs, infos, tail, extra: (
        struct.pack("<QQ", len(infos) + extra, len(kvs)) + b"".join(kvs) + b"".join(infos) + tail
    ),
    st.lists(metadata, max_size=4),
    st.lists(tensors, max_size=3),
    st.binary(max_size=256),
    st.sampled_from([0, 0, 0, 1, 2**40]),
)
RANDOM_BYTES_EXAMPLES = 400


def test_random_bytes_after_the_magic(tmp_path):
    passed: list[Path] = []

    @settings(FUZZ, max_examples=RANDOM_BYTES_EXAMPLES)
    @given(st.binary(min_size=0, max_size=4096) | shaped_headers)
    def check(body):
        GENERATED["random bytes"] = GENERATED.get("random bytes", 0) + 1
        path = tmp_path / "fuzz.gguf"
        path.write_bytes(GGUF_V3 + body)
        if refusal(path) is None:
            kept = tmp_path / f"passed-{len(passed)}.gguf"
            path.replace(kept)
            passed.append(kept)

    check()
    assert GENERATED["random bytes"] >= RANDOM_BYTES_EXAMPLES
    for outcome in load_in_llama_cpp([{"path": str(p), "flips": []} for p in passed]):
        assert "ran" not in outcome, outcome  # nothing here is a model llama.cpp could run


TRUNCATION_EXAMPLES = 150


def write_prefix(path: Path, size: int) -> None:
    """The guide file cut at `size` bytes. The header's bytes are real; past it the file is
    extended without writing (zeros), which no check reads: the verdict is the real prefix's."""
    with path.open("wb") as f:
        f.write(HEADER_BYTES[:size])
        f.truncate(size)


def test_truncations_of_a_real_model(tmp_path):
    size = GUIDE.stat().st_size

    @settings(FUZZ, max_examples=TRUNCATION_EXAMPLES)
    @given(st.integers(0, HEADER.data_start + 64) | st.integers(0, size - 1))
    def check(cut):
        GENERATED["truncations"] = GENERATED.get("truncations", 0) + 1
        path = tmp_path / "cut.gguf"
        write_prefix(path, cut)
        line = refusal(path)
        assert line is not None, f"a prefix of {cut} bytes passed"
        assert "truncated" in line or "not a GGUF file" in line, line

    check()
    assert GENERATED["truncations"] >= TRUNCATION_EXAMPLES


@pytest.fixture(scope="module")
def guide_copy(tmp_path_factory) -> Path:
    """A copy of the guide file that tests flip bits in and restore."""
    copy = tmp_path_factory.mktemp("flips") / "guide.gguf"
    shutil.copyfile(GUIDE, copy)
    return copy


def restore(copy: Path) -> None:
    """The guide's header written back over a copy (every flip here is in the header)."""
    with copy.open("r+b") as f:
        f.write(HEADER_BYTES)


def flip(path: Path, flips: list[tuple[int, int]]) -> None:
    """XOR each (offset, mask) into the file (flipping the same bits again restores it)."""
    with path.open("r+b") as f:
        for offset, mask in flips:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ mask]))


BIT_FLIP_EXAMPLES = 200
header_offsets = st.integers(0, 256 * 1024) | st.integers(TENSOR_INFO_START, HEADER.data_start - 1)
bit_flips = st.lists(
    st.tuples(header_offsets, st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128])),
    min_size=1,
    max_size=3,
    unique_by=lambda f: f[0],
)


def test_bit_flips_in_a_real_header(guide_copy):
    passed: list[list[tuple[int, int]]] = []

    @settings(FUZZ, max_examples=BIT_FLIP_EXAMPLES)
    @given(bit_flips)
    def check(flips):
        GENERATED["bit flips"] = GENERATED.get("bit flips", 0) + 1
        flip(guide_copy, flips)
        try:
            if refusal(guide_copy) is None:
                passed.append(flips)
        finally:
            flip(guide_copy, flips)  # XOR again: the original bytes

    check()
    assert GENERATED["bit flips"] >= BIT_FLIP_EXAMPLES
    assert refusal(guide_copy) is None  # restored
    load_in_llama_cpp([{"path": str(guide_copy), "flips": f} for f in passed], restore=lambda: restore(guide_copy))


# -- the remembered verdict ---------------------------------------------------------------------


def test_a_passed_check_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    path = tmp_path / "model.gguf"
    write_prefix(path, GUIDE.stat().st_size)  # the real header; zeros for data
    assert check_gguf_file(path) == HEADER
    assert str(path.resolve()) in json.loads((tmp_path / "models" / "gguf_checked.json").read_text())

    def no_walk(data):
        raise AssertionError("the header was walked again")

    with monkeypatch.context() as patched:
        patched.setattr(gguf_file, "read_header", no_walk)
        assert check_gguf_file(path) == HEADER
    flip(path, [(16 + 7, 0x80)])  # the same size, another mtime
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(BlendinError, match="metadata count"):
        check_gguf_file(path)


# -- the command line ---------------------------------------------------------------------------


def blendin(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "blendin_local", "generate", "-n", "1", "-t", "1", *args, "hi"],
        capture_output=True,
        env=ENV,
        timeout=300,
    )


def assert_refused_in_one_line(proc: subprocess.CompletedProcess, path: Path) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"blendin: error: {path}: "), err


@pytest.mark.models
@pytest.mark.parametrize("seed, role", [(1, "--guide"), (2, "--guide"), (3, "--base")])
def test_random_bytes_on_the_command_line(tmp_path, seed, role):
    import random

    path = tmp_path / "random.gguf"
    path.write_bytes(GGUF_V3 + random.Random(seed).randbytes(4096))
    assert_refused_in_one_line(blendin(role, str(path)), path)


@pytest.mark.models
@pytest.mark.parametrize("cut, role", [(HEADER.data_start - 1000, "--guide"), (GUIDE.stat().st_size // 2, "--base")])
def test_truncation_on_the_command_line(tmp_path, cut, role):
    path = tmp_path / "cut.gguf"
    write_prefix(path, cut)
    assert_refused_in_one_line(blendin(role, str(path)), path)


@pytest.mark.models
def test_header_bit_flip_on_the_command_line(guide_copy):
    flips = [(16 + 7, 0x80)]  # the top bit of the metadata count
    flip(guide_copy, flips)
    try:
        proc = blendin("--guide", str(guide_copy))
    finally:
        flip(guide_copy, flips)
    assert_refused_in_one_line(proc, guide_copy)
    assert "metadata count" in proc.stderr.decode()


@pytest.mark.models
def test_metadata_llama_cpp_dies_on_is_one_line_on_the_command_line(guide_copy):
    """The header holds together, but llama.cpp aborts on the layer count: the trial load's child
    dies, not blendin."""
    key = b"llama.block_count"
    value = HEADER_BYTES.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4
    flips = [(value + 3, 0x80)]
    flip(guide_copy, flips)
    try:
        assert refusal(guide_copy) is None
        proc = blendin("--guide", str(guide_copy))
    finally:
        flip(guide_copy, flips)
    assert_refused_in_one_line(proc, guide_copy)
    assert "llama.cpp crashed (SIGABRT)" in proc.stderr.decode()


@pytest.mark.models
def test_corrupt_tensor_data_reaches_llama_cpp_and_runs(guide_copy):
    """No header check sees tensor data: 64 KB of 0xff (NaN scales in the embeddings) load and run."""
    with guide_copy.open("r+b") as f:
        f.seek(HEADER.data_start)
        original = f.read(1 << 16)
        f.seek(HEADER.data_start)
        f.write(b"\xff" * len(original))
    try:
        proc = blendin("--guide", str(guide_copy), "--method", "guide", "--temp", "0.7")
    finally:
        with guide_copy.open("r+b") as f:
            f.seek(HEADER.data_start)
            f.write(original)
    err = proc.stderr.decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
