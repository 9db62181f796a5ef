"""The model registry: names, paths, the models cache, sha256 checked once."""

import os
import time

import pytest

from blendin_local.backends import registry as reg
from blendin_local.backends.gguf_file import check_gguf_file, explain_load_failure
from blendin_local.errors import BlendinError


def test_default_pair_is_registered():
    base, guide = reg.resolve_pair(reg.DEFAULT_PAIR)
    registry = reg.load_registry()
    assert registry.models[base].role == "base" and registry.models[guide].role == "guide"


@pytest.mark.models
def test_names_resolve_to_checked_files():
    path = reg.resolve_model("smollm2-135m-instruct")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.is_file()
    check_gguf_file(path)


def test_paths_pass_through_and_unknown_names_fail(tmp_path):
    assert reg.resolve_model(str(tmp_path / "x.gguf")) == tmp_path / "x.gguf"
    with pytest.raises(BlendinError, match="unknown model 'nope'"):
        reg.resolve_model("nope")


def test_files_in_the_models_folder_resolve_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv(reg.MODELS_DIR_ENV, str(tmp_path))
    (tmp_path / "mine.gguf").write_bytes(b"GGUF")
    assert reg.resolve_model("mine") == tmp_path / "mine.gguf"


def test_sha256_is_checked_once_and_damage_is_caught(tmp_path, monkeypatch):
    monkeypatch.setenv(reg.MODELS_DIR_ENV, str(tmp_path / "cache"))
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 100)
    good = reg.file_sha256(f)
    reg.verify_sha256(f, good)
    assert (tmp_path / "cache" / "verified.json").is_file()
    with pytest.raises(BlendinError, match="sha256"):
        reg.verify_sha256(f, "0" * 64)
    f.write_bytes(b"GGUF" + b"\1" * 100)  # changed: size and mtime no longer match the stamp
    with pytest.raises(BlendinError, match="damaged"):
        reg.verify_sha256(f, good)


def test_missing_package_message(monkeypatch):
    entry = reg.ModelEntry(
        name="x",
        description="",
        file="x.gguf",
        package="not-installed-pkg",
        module="not_installed_pkg_xyz",
        source="wheel",
        sha256="0" * 64,
        role="guide",
        prompt="chat",
        license="",
    )
    with pytest.raises(BlendinError, match="pip install"):
        reg.locate(entry)


def test_header_walk_tells_truncation_from_other_failures(tmp_path):
    real = reg.resolve_model("smollm2-135m-instruct")
    assert "llama.cpp could not load" in explain_load_failure(real)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(real.read_bytes()[:2_000_000])
    assert "truncated GGUF file" in explain_load_failure(cut)
    header_only = tmp_path / "tiny.gguf"
    header_only.write_bytes(real.read_bytes()[:100])
    assert "truncated or corrupt GGUF header" in explain_load_failure(header_only)


def test_partial_files_an_assembly_killed_mid_way_left_are_removed_once_stale(tmp_path):
    target = tmp_path / "gemma.gguf"
    stale, fresh = tmp_path / ".gemma.gguf.00aa.partial", tmp_path / ".gemma.gguf.11bb.partial"
    other = tmp_path / ".other.gguf.22cc.partial"
    for path in (stale, fresh, other):
        path.write_bytes(b"GGUF")
    old = time.time() - reg.STALE_PARTIAL_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    reg._remove_stale_partials(target)
    assert not stale.exists() and fresh.exists() and other.exists()  # another assembly's may be running


def test_a_models_folder_that_cannot_be_made_is_one_error_naming_the_setting(tmp_path, monkeypatch):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("mine")
    monkeypatch.setenv(reg.MODELS_DIR_ENV, str(in_the_way))
    chunked = next(name for name, entry in reg.load_registry().models.items() if entry.source == "chunks")
    with pytest.raises(BlendinError, match=f"cannot make the models folder.*set {reg.MODELS_DIR_ENV}"):
        reg.resolve_model(chunked)
    assert in_the_way.read_text() == "mine"


def test_the_models_folder_setting_expands_a_leading_tilde(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(reg.MODELS_DIR_ENV, "~/my models")
    assert reg.models_dir() == tmp_path / "my models"
