"""Models from other tools' folders (backends/model_sources/): Ollama, the Hugging Face hub cache, LM Studio
and the models folder, each laid out in a temporary folder as that tool writes it, pointing at the
real default GGUF files; resolved, listed, and generated with end to end. Bad input is one line."""

import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.backends import model_sources
from blendin_local.backends.gguf_file import GgufHeader, check_gguf_header, display_name
from blendin_local.backends.model_sources import folders, hugging_face, llamacpp, llm, lmstudio, ollama
from blendin_local.backends.registry import MODELS_DIR_ENV, file_sha256, models_dir, resolve_model
from blendin_local.errors import BlendinError
from blendin_local.interfaces import cli

BASE = resolve_model("gemma3-270m")  # Gemma 3 270M, Q4_K_M, no chat template
GUIDE = resolve_model("smollm2-135m-instruct")  # SmolLM2-135M-Instruct, Q4_1, a chat template
HF_REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"
LMSTUDIO_REPO = "lmstudio-community/gemma-3-270m-it-GGUF"
ENV_VARS = (
    "OLLAMA_MODELS",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "LLM_USER_PATH",
    "LLAMA_CACHE",
    "HOME",
)
LLAMACPP_FILE = f"{HF_REPO.replace('/', '_')}_SmolLM2-135M-Instruct-Q4_1.gguf"
LLM_ID = "SmolLM2-135M-Instruct-Q4_1"
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def sha256() -> dict[Path, str]:
    """The real digests of the two default files, computed once: Ollama and the hub name blobs by them."""
    return {path: file_sha256(path) for path in (BASE, GUIDE)}


# -- the tools' layouts -----------------------------------------------------------------------


def ollama_blob(blobs: Path, data: bytes, media_type: str) -> dict:
    """A small layer (template, params, license, config) as Ollama stores it: named by its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / f"sha256-{digest}").write_bytes(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def write_ollama(
    root: Path, name: str, tag: str, model: Path, digest: str, *, host_ns=("registry.ollama.ai", "library")
):
    """An Ollama pull: the model blob (a symlink to the real file, named by its real sha256), a
    template, params, license and config blob, and the manifest Ollama writes for NAME:TAG."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    model_blob = blobs / f"sha256-{digest}"
    if not model_blob.exists():
        model_blob.symlink_to(model)
    layers = [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": model.stat().st_size},
        ollama_blob(blobs, b"{{ .Prompt }}", "application/vnd.ollama.image.template"),
        ollama_blob(blobs, b'{"stop":["<end_of_turn>"]}', "application/vnd.ollama.image.params"),
        ollama_blob(blobs, b"Gemma Terms of Use", "application/vnd.ollama.image.license"),
    ]
    config = ollama_blob(
        blobs,
        json.dumps({"model_format": "gguf", "model_family": "gemma3", "file_type": "Q4_K_M"}).encode(),
        "application/vnd.docker.container.image.v1+json",
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": config,
        "layers": layers,
    }
    path = root / "manifests" / host_ns[0] / host_ns[1] / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, separators=(",", ":")) + "\n")  # Go's json.Encoder: compact, one line
    return path


def write_hf(cache: Path, repo: str, files: dict[str, Path], sha256: dict[Path, str]) -> Path:
    """A hub download: blobs/<etag> (the sha256 of an LFS file; here a symlink to the real file),
    snapshots/<commit>/<file> relative symlinks to them, refs/main holding the commit."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / HF_COMMIT
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(HF_COMMIT)  # huggingface_hub writes it without a newline
    readme = b"---\nlicense: apache-2.0\n---\n"
    readme_etag = hashlib.sha1(b"blob %d\0" % len(readme) + readme).hexdigest()  # a git file: its git sha1
    (folder / "blobs" / readme_etag).write_bytes(readme)
    etags = {"README.md": readme_etag}
    for name, source in files.items():
        etags[name] = sha256[source]
        blob = folder / "blobs" / sha256[source]
        if not blob.exists():
            blob.symlink_to(source)
    for name, etag in etags.items():
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(folder / "blobs" / etag, link.parent))
    return snapshot


def write_lmstudio(models: Path, repo: str, files: dict[str, Path]) -> Path:
    """LM Studio's layout, PUBLISHER/REPO/FILE.gguf. LM Studio downloads regular files; these are
    symlinks to the real ones, as a user sharing files with it makes them (and LM Studio follows):
    a regular file in its place is the split-model test's."""
    folder = models / repo
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (folder / name).symlink_to(source)
    return folder


def write_llm(root: Path, models: dict) -> Path:
    """llm-gguf's index, gguf/models.json in llm's folder, as `llm gguf register-model` writes it."""
    (root / "gguf").mkdir(parents=True, exist_ok=True)
    (root / "gguf" / "models.json").write_text(json.dumps(models, indent=2))
    return root


def write_llamacpp(cache: Path, repo: str, tag: str, file: str, target: Path) -> Path:
    """What `llama-cli -hf REPO:TAG` leaves: the manifest the hub answered, and the file it chose,
    named REPO_FILE with every '/' made '_' (here a link to the real one)."""
    cache.mkdir(parents=True, exist_ok=True)
    user, model = repo.split("/")
    manifest = {"ggufFile": {"rfilename": file, "size": target.stat().st_size}}
    (cache / f"manifest={user}={model}={tag}.json").write_text(json.dumps(manifest))
    path = cache / f"{repo}_{file}".replace("/", "_")
    path.symlink_to(target)
    return path


@pytest.fixture
def sources(tmp_path, monkeypatch, sha256):
    """Every source in tmp_path, the environment pointing at them: gemma3:270m in Ollama, the
    guide in the hub cache, the base in LM Studio's default folder."""
    monkeypatch.setenv(MODELS_DIR_ENV, str(models_dir()))  # the user's, as HOME moves: its GGUF verdicts
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    ollama, hub = tmp_path / "ollama", tmp_path / "hub"
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    write_ollama(ollama, "gemma3", "270m", BASE, sha256[BASE])
    write_hf(hub, HF_REPO, {"SmolLM2-135M-Instruct-Q4_1.gguf": GUIDE}, sha256)
    write_lmstudio(home / ".lmstudio" / "models", LMSTUDIO_REPO, {"gemma-3-270m-it-Q4_K_M.gguf": BASE})
    # `llm gguf download-model` puts the file in its own folder: here, a link to the real guide
    downloaded = tmp_path / "llm" / "gguf" / "models" / f"{LLM_ID}.gguf"
    downloaded.parent.mkdir(parents=True)
    downloaded.symlink_to(GUIDE)
    llm = write_llm(tmp_path / "llm", {LLM_ID: {"path": str(downloaded), "aliases": ["smol", "s2"]}})
    monkeypatch.setenv("LLM_USER_PATH", str(llm))
    llamacpp = tmp_path / "llamacpp"
    write_llamacpp(llamacpp, HF_REPO, "Q4_1", "SmolLM2-135M-Instruct-Q4_1.gguf", GUIDE)
    (llamacpp / "ai_gemma3_270M-Q4_K_M.gguf").symlink_to(BASE)  # a download no manifest chose
    monkeypatch.setenv("LLAMA_CACHE", str(llamacpp))
    return {
        "ollama": ollama,
        "hub": hub,
        "home": home,
        "lmstudio": home / ".lmstudio" / "models",
        "llm": llm,
        "llm_file": downloaded,
        "llamacpp": llamacpp,
    }


def error_line(capsys, *args: str) -> str:
    """The one stderr line of a command that fails with exit code 1."""
    with pytest.raises(SystemExit) as stop:
        cli.main(list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 1 and len(lines) == 1 and lines[0].startswith("blendin: error: "), lines
    return lines[0]


def path_of(capsys, spec: str) -> Path:
    cli.main(["models", "path", spec])
    return Path(capsys.readouterr().out.strip())


# -- resolving and generating through each source ------------------------------------------------


def test_an_ollama_name_resolves_to_its_model_blob(sources, sha256, capsys):
    blob = sources["ollama"] / "blobs" / f"sha256-{sha256[BASE]}"
    assert path_of(capsys, "ollama:gemma3:270m") == blob
    write_ollama(sources["ollama"], "gemma3", "latest", BASE, sha256[BASE])
    assert path_of(capsys, "ollama:gemma3") == blob  # the default tag
    assert path_of(capsys, "ollama:library/gemma3:270m") == blob
    write_ollama(sources["ollama"], "smollm2", "q4_1", GUIDE, sha256[GUIDE], host_ns=("hf.co", "bartowski"))
    assert path_of(capsys, "ollama:hf.co/bartowski/smollm2:q4_1").resolve() == GUIDE


def test_a_hub_repo_resolves_by_quant_by_file_or_alone(sources, sha256, capsys):
    snapshot = sources["hub"] / f"models--{HF_REPO.replace('/', '--')}" / "snapshots" / HF_COMMIT
    expected = snapshot / "SmolLM2-135M-Instruct-Q4_1.gguf"
    assert path_of(capsys, f"hf:{HF_REPO}") == expected  # the only GGUF file of the repo
    assert path_of(capsys, f"hf:{HF_REPO}:q4_1") == expected  # the quant, case-insensitively
    assert path_of(capsys, f"hf:{HF_REPO}/SmolLM2-135M-Instruct-Q4_1.gguf") == expected
    assert expected.resolve() == GUIDE


def test_lmstudio_and_the_models_folder_resolve(sources, tmp_path, monkeypatch, capsys):
    expected = sources["lmstudio"] / LMSTUDIO_REPO / "gemma-3-270m-it-Q4_K_M.gguf"
    assert path_of(capsys, f"lmstudio:{LMSTUDIO_REPO}:Q4_K_M") == expected
    assert path_of(capsys, f"lmstudio:{LMSTUDIO_REPO}") == expected
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "mine"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "guide.gguf").symlink_to(GUIDE)
    assert path_of(capsys, "models:guide") == tmp_path / "mine" / "guide.gguf"
    assert path_of(capsys, "guide") == tmp_path / "mine" / "guide.gguf"  # unprefixed: as before
    assert path_of(capsys, "smollm2-135m-instruct") == GUIDE  # a registry name: as before


def test_an_llm_model_resolves_by_its_id_or_an_alias(sources, tmp_path, capsys):
    for spec in (f"llm:{LLM_ID}", f"llm:gguf/{LLM_ID}", "llm:smol", "llm:s2"):
        assert path_of(capsys, spec) == sources["llm_file"]
    line = error_line(capsys, "models", "path", "llm:nope")
    assert "llm:nope: no such model or alias" in line and f"there: {LLM_ID}, s2, smol" in line
    write_llm(sources["llm"], {"rel": {"path": "models/x.gguf"}, "gone": {"path": str(tmp_path / "gone.gguf")}})
    assert "is not absolute" in error_line(capsys, "models", "path", "llm:rel")
    assert "does not exist" in error_line(capsys, "models", "path", "llm:gone")
    for content, needle in ((b"{", "is not JSON"), (b"[]", "not a JSON object"), (b"[" * 100_000, "is not JSON")):
        (sources["llm"] / "gguf" / "models.json").write_bytes(content)
        assert needle in error_line(capsys, "models", "path", "llm:smol")


def test_a_llamacpp_download_resolves_as_llama_cli_hf_names_it(sources, capsys):
    cache = sources["llamacpp"]
    assert path_of(capsys, f"llamacpp:{HF_REPO}:Q4_1") == cache / LLAMACPP_FILE
    assert path_of(capsys, "llamacpp:ai_gemma3_270M-Q4_K_M.gguf") == cache / "ai_gemma3_270M-Q4_K_M.gguf"
    line = error_line(capsys, "models", "path", f"llamacpp:{HF_REPO}")  # the tag latest was never pulled
    assert "not downloaded" in line and "tags there: Q4_1" in line
    (cache / LLAMACPP_FILE).unlink()
    assert "does not exist" in error_line(capsys, "models", "path", f"llamacpp:{HF_REPO}:Q4_1")
    manifest = cache / f"manifest={HF_REPO.replace('/', '=')}=Q4_1.json"
    for content, needle in (
        (b"{", "is not JSON"),
        (json.dumps({"ggufFile": {"rfilename": "../../etc/passwd"}}).encode(), "names no GGUF file"),
        (json.dumps({"ggufFile": "x"}).encode(), "names no GGUF file"),
    ):
        manifest.write_bytes(content)
        assert needle in error_line(capsys, "models", "path", f"llamacpp:{HF_REPO}:Q4_1")
    for spec in ("llamacpp:a/b/c", "llamacpp:passwd", "llamacpp:..", "llamacpp:a/b:Q4/x"):
        assert error_line(capsys, "models", "path", spec)


def test_llamacpp_tags_projectors_and_a_bad_manifest(sources, capsys):
    cache = sources["llamacpp"]
    unsloth = "unsloth/gemma-3-270m-it-GGUF"
    write_llamacpp(cache, unsloth, "UD-Q4_K_XL", "gemma-3-270m-it-UD-Q4_K_XL.gguf", BASE)  # a tag with a hyphen
    assert (
        path_of(capsys, f"llamacpp:{unsloth}:UD-Q4_K_XL").name
        == "unsloth_gemma-3-270m-it-GGUF_gemma-3-270m-it-UD-Q4_K_XL.gguf"
    )
    (cache / "unsloth_gemma-3-270m-it-GGUF_mmproj-F16.gguf").symlink_to(GUIDE)  # a manifest's projector
    (cache / "manifest=x=y=long.json").write_text(json.dumps({"ggufFile": {"rfilename": "a" * 250 + "/" + "b" * 250}}))
    cli.main(["models", "list", "--all", "--json"])
    specs = {row["spec"] for row in json.loads(capsys.readouterr().out)}
    assert f"llamacpp:{unsloth}:UD-Q4_K_XL" in specs and f"llamacpp:{HF_REPO}:Q4_1" in specs  # the rest still listed
    assert not any("mmproj" in spec for spec in specs)


UNSLOTH = "unsloth/gemma-3-270m-it-GGUF"


def write_llamacpp_hub(cache: Path, files: dict[str, Path], sha256) -> Path:
    """What `llama-cli -hf` leaves since March 2026: the hub's own layout (as huggingface_hub
    writes it, write_hf) in llama.cpp's cache, for one repo of several quantizations."""
    return write_hf(cache, UNSLOTH, files, sha256)


def test_a_llamacpp_download_in_the_hub_layout_is_the_file_llama_cli_hf_picks(sources, sha256, capsys):
    snapshot = write_llamacpp_hub(
        sources["llamacpp"],
        {
            "gemma-3-270m-it-F16.gguf": BASE,
            "gemma-3-270m-it-Q8_0.gguf": BASE,
            "mmproj-gemma-3-270m-it-Q4_K_M.gguf": GUIDE,  # rides along: matches Q4_K_M, is no model
            "split/gemma-3-270m-it-Q5_K_M-00001-of-00002.gguf": BASE,
            "split/gemma-3-270m-it-Q5_K_M-00002-of-00002.gguf": GUIDE,
        },
        sha256,
    )
    spec = f"llamacpp:{UNSLOTH}"
    assert path_of(capsys, spec) == snapshot / "gemma-3-270m-it-Q8_0.gguf"  # no Q4_K_M model: then Q8_0
    assert path_of(capsys, f"{spec}:f16") == snapshot / "gemma-3-270m-it-F16.gguf"  # a tag, without case
    assert path_of(capsys, f"{spec}:Q5_K_M") == snapshot / "split/gemma-3-270m-it-Q5_K_M-00001-of-00002.gguf"
    assert path_of(capsys, f"{spec}/GEMMA-3-270M-IT-F16.GGUF") == snapshot / "gemma-3-270m-it-F16.gguf"  # as -hff
    line = error_line(capsys, "models", "path", f"{spec}:Q2_K")
    assert "no GGUF file with the tag Q2_K" in line and "gemma-3-270m-it-F16.gguf" in line and "mmproj" not in line
    assert "no such file in the snapshot" in error_line(capsys, "models", "path", f"{spec}/nope.gguf")
    cli.main(["models", "list", "--all", "--json"])
    specs = {row["spec"]: row["path"] for row in json.loads(capsys.readouterr().out) if row["source"] == "llamacpp"}
    assert specs[spec] == str(snapshot / "gemma-3-270m-it-Q8_0.gguf")
    assert specs[f"{spec}:F16"] == str(snapshot / "gemma-3-270m-it-F16.gguf")
    assert specs[f"{spec}:Q5_K_M"].endswith("Q5_K_M-00001-of-00002.gguf")
    assert not any("mmproj" in path or "00002-of" in path for path in specs.values())
    (snapshot / "gemma-3-270m-it-Q4_K_M.gguf").symlink_to(BASE)
    assert path_of(capsys, spec) == snapshot / "gemma-3-270m-it-Q4_K_M.gguf"  # llama.cpp's first choice
    (snapshot / "split/gemma-3-270m-it-Q5_K_M-00002-of-00002.gguf").unlink()
    assert "parts of the split model are missing" in error_line(capsys, "models", "path", f"{spec}:Q5_K_M")


def test_llamacpp_reads_the_branch_it_fetched_and_moved_downloads_win(sources, sha256, capsys):
    cache = sources["llamacpp"]
    snapshot = write_llamacpp_hub(cache, {"gemma-3-270m-it-Q8_0.gguf": BASE}, sha256)
    refs = cache / f"models--{UNSLOTH.replace('/', '--')}" / "refs"
    (refs / "main").rename(refs / "dev")  # no main: the other branch llama.cpp fetched
    assert path_of(capsys, f"llamacpp:{UNSLOTH}") == snapshot / "gemma-3-270m-it-Q8_0.gguf"
    (refs / "dev").write_text("not a commit")
    assert "names a downloaded snapshot" in error_line(capsys, "models", "path", f"llamacpp:{UNSLOTH}")
    (refs / "main").write_text(HF_COMMIT)
    # a manifest of the flat layout for the same repo: llama.cpp moved it into the hub layout,
    # and reads only that one now
    write_llamacpp(cache, UNSLOTH, "latest", "gemma-3-270m-it-F16.gguf", GUIDE)
    assert path_of(capsys, f"llamacpp:{UNSLOTH}") == snapshot / "gemma-3-270m-it-Q8_0.gguf"


def test_without_llama_cache_llamacpp_reads_the_hub_cache_which_lists_as_hf(sources, capsys, monkeypatch):
    monkeypatch.delenv("LLAMA_CACHE")
    snapshot = sources["hub"] / f"models--{HF_REPO.replace('/', '--')}" / "snapshots" / HF_COMMIT
    assert llamacpp.hub_cache() == hugging_face.hub_cache() == sources["hub"]
    assert path_of(capsys, f"llamacpp:{HF_REPO}") == snapshot / "SmolLM2-135M-Instruct-Q4_1.gguf"  # the only model
    cli.main(["models", "list", "--all", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [row["spec"] for row in rows if row["path"] == str(snapshot / "SmolLM2-135M-Instruct-Q4_1.gguf")] == [
        f"hf:{HF_REPO}"
    ]  # once, as the hub cache's


def test_an_llm_entry_whose_file_is_gone_is_not_listed(sources, tmp_path, capsys):
    write_llm(sources["llm"], {"gone": {"path": str(tmp_path / "gone.gguf")}, "rel": {"path": "x.gguf"}})
    cli.main(["models", "list", "--all", "--json"])
    paths = {row["path"] for row in json.loads(capsys.readouterr().out)}
    assert str(tmp_path / "gone.gguf") not in paths and "x.gguf" not in paths


@pytest.mark.parametrize(
    "platform,env,expected",
    [("darwin", {}, "Library/Caches/llama.cpp"), ("win32", {"LOCALAPPDATA": "LAD"}, "LAD/llama.cpp")],
)
def test_llamacpps_cache_on_macos_and_windows(tmp_path, monkeypatch, platform, env, expected):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, str(tmp_path / value))
    monkeypatch.setattr(llamacpp.sys, "platform", platform)
    assert llamacpp.flat_cache_dir() == tmp_path / expected


@pytest.mark.parametrize(
    "folder,default,xdg,override",
    [
        (llamacpp.flat_cache_dir, ".cache/llama.cpp", ("XDG_CACHE_HOME", "llama.cpp"), "LLAMA_CACHE"),
        (
            llm.user_dir,
            ".config/io.datasette.llm",
            ("XDG_CONFIG_HOME", "io.datasette.llm"),
            "LLM_USER_PATH",
        ),
    ],
)
def test_llamacpps_and_llms_folders_on_linux(tmp_path, monkeypatch, folder, default, xdg, override):
    """The default under HOME, then the XDG folder, then the tool's own variable (a ~ expanded)."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert folder() == tmp_path / default
    monkeypatch.setenv(xdg[0], str(tmp_path / "xdg"))
    assert folder() == tmp_path / "xdg" / xdg[1]
    monkeypatch.setenv(override, "~/own")
    assert folder() == tmp_path / "own"


@pytest.mark.models
def test_generate_with_a_base_from_ollama_and_a_guide_from_the_hub(sources, capsys):
    cli.main(["generate", "Hi", "-n", "4", "--base", "ollama:gemma3:270m", "--guide", f"hf:{HF_REPO}:Q4_1"])
    out = capsys.readouterr()
    assert out.out.strip() and "[blendin]" in out.err


@pytest.mark.models
def test_generate_with_a_base_from_lmstudio_and_a_guide_by_registry_name(sources, capsys):
    cli.main(["generate", "Hi", "-n", "4", "--base", f"lmstudio:{LMSTUDIO_REPO}", "--guide", "smollm2-135m-instruct"])
    assert capsys.readouterr().out.strip()


@pytest.mark.models
def test_generate_with_a_guide_llm_registered(sources, capsys):
    cli.main(["generate", "Hi", "-n", "4", "--base", "gemma3-270m", "--guide", "llm:smol"])
    assert capsys.readouterr().out.strip()


# -- bad input: one line each ---------------------------------------------------------------------


def test_a_missing_manifest_is_one_line(sources, capsys):
    line = error_line(capsys, "models", "path", "ollama:llama3.2:1b")
    assert "ollama:llama3.2:1b: no manifest" in line and str(sources["ollama"]) in line


def test_an_unknown_tag_lists_the_tags_there(sources, capsys):
    line = error_line(capsys, "generate", "Hi", "--base", "ollama:gemma3:1b")
    assert "no such tag" in line and "gemma3:270m" in line


def test_a_manifest_without_a_model_layer_is_one_line(sources, capsys):
    manifest = sources["ollama"] / "manifests" / "registry.ollama.ai" / "library" / "gemma3" / "270m"
    data = json.loads(manifest.read_text())
    data["layers"] = [layer for layer in data["layers"] if layer["mediaType"] != ollama.MODEL_MEDIA_TYPE]
    manifest.write_text(json.dumps(data))
    line = error_line(capsys, "models", "path", "ollama:gemma3:270m")
    assert "no layer of type application/vnd.ollama.image.model" in line
    assert "application/vnd.ollama.image.template" in line


def test_a_dangling_symlink_is_one_line(sources, sha256, capsys):
    blob = sources["hub"] / f"models--{HF_REPO.replace('/', '--')}" / "blobs" / sha256[GUIDE]
    blob.unlink()  # an interrupted download, or a cleaned cache: the snapshot's link points nowhere
    assert "is a dangling symlink" in error_line(capsys, "models", "path", f"hf:{HF_REPO}")
    (sources["ollama"] / "blobs" / f"sha256-{sha256[BASE]}").unlink()
    assert "does not exist" in error_line(capsys, "models", "path", "ollama:gemma3:270m")


def test_an_ambiguous_quant_lists_the_candidates(sources, sha256, capsys):
    snapshot = sources["hub"] / f"models--{HF_REPO.replace('/', '--')}" / "snapshots" / HF_COMMIT
    for name in ("SmolLM2-135M-Instruct-Q4_1-v2.gguf", "other/SmolLM2-135M-Instruct.Q4_1.gguf"):
        (snapshot / name).parent.mkdir(exist_ok=True)
        (snapshot / name).symlink_to(snapshot / "SmolLM2-135M-Instruct-Q4_1.gguf")
    line = error_line(capsys, "models", "path", f"hf:{HF_REPO}:Q4_1")
    assert "3 GGUF files match" in line and "other/SmolLM2-135M-Instruct.Q4_1.gguf" in line
    line = error_line(capsys, "models", "path", f"hf:{HF_REPO}")
    assert "add :QUANT or a file name" in line
    assert "no GGUF file with 'Q8_0'" in error_line(capsys, "models", "path", f"hf:{HF_REPO}:Q8_0")


def test_candidates_are_bounded(sources, capsys):
    folder = sources["ollama"] / "manifests" / "registry.ollama.ai" / "library" / "gemma3"
    for i in range(25):
        (folder / f"tag{i:02d}").write_text("{}")
    line = error_line(capsys, "models", "path", "ollama:gemma3:nope")
    assert "gemma3:tag07" in line and "gemma3:tag20" not in line and "and 16 more" in line


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("ollama:../../etc/passwd", "a name is [HOST/][NAMESPACE/]MODEL[:TAG]"),
        ("ollama:..", "is not a valid Ollama model"),
        ("ollama:gemma3:..", "is not a valid Ollama tag"),
        ("hf:../x", "give hf:ORG/REPO"),
        ("hf:a--b/c", "give hf:ORG/REPO"),
        ("hf:org/repo/../../x.gguf", "ending in .gguf"),
        ("hf:org/repo:Q4 K", "characters other than"),
        ("lmstudio:org", "give lmstudio:ORG/REPO"),
        ("models:../x", "not a path"),
        ("ollama:gemma3\n:270m", "characters other than"),
        ("hf:" + "a" * 600, "at most 512"),
    ],
)
def test_bad_specs_are_one_line(sources, capsys, spec, needle):
    line = error_line(capsys, "models", "path", spec)
    assert needle in line


def test_a_name_longer_than_the_filesystem_takes_is_one_line(sources, capsys):
    host = "h" * 300  # Ollama allows 350 characters in a host; a file name holds 255 bytes
    assert "File name too long" in error_line(capsys, "models", "path", f"ollama:{host}/ns/model:tag")


def test_a_hostile_manifest_is_one_line(sources, tmp_path, capsys):
    folder = sources["ollama"] / "manifests" / "registry.ollama.ai" / "library" / "evil"
    folder.mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"GGUF")
    cases = {
        "big": (b" " * (folders.MAX_MANIFEST_BYTES + 1), "larger than"),
        "notjson": (b"\xff\xfe{", "not JSON"),
        "deep": (b"[" * 100_000, "not JSON"),
        "nolayers": (b'{"layers": {}}', "no list of layers"),
        "escape": (
            json.dumps({"layers": [{"mediaType": ollama.MODEL_MEDIA_TYPE, "digest": "../../../secret"}]}),
            "digest is not sha256",
        ),
        "two": (
            json.dumps({"layers": [{"mediaType": ollama.MODEL_MEDIA_TYPE, "digest": "sha256:" + "0" * 64}] * 2}),
            "2 layers of type",
        ),
    }
    for tag, (data, needle) in cases.items():
        (folder / tag).write_bytes(data if isinstance(data, bytes) else data.encode())
        assert needle in error_line(capsys, "models", "path", f"ollama:evil:{tag}")
    (folder / "fifo").unlink(missing_ok=True)
    os.mkfifo(folder / "fifo")
    assert "not a regular file" in error_line(capsys, "models", "path", "ollama:evil:fifo")
    (folder / "dir").mkdir()
    assert "is a directory" in error_line(capsys, "models", "path", "ollama:evil:dir")


def test_a_blob_of_the_wrong_size_is_an_unfinished_pull(sources, sha256, capsys):
    manifest = sources["ollama"] / "manifests" / "registry.ollama.ai" / "library" / "gemma3" / "270m"
    data = json.loads(manifest.read_text())
    data["layers"][0]["size"] += 1
    manifest.write_text(json.dumps(data))
    assert "an unfinished pull?" in error_line(capsys, "models", "path", "ollama:gemma3:270m")


# -- split files, projectors, where each tool keeps its files ----------------------------------


def test_a_split_model_is_named_by_its_first_part_and_needs_all_parts(sources, capsys):
    folder = sources["lmstudio"] / "unsloth" / "Big-GGUF"
    folder.mkdir(parents=True)
    for i in (1, 2, 3):
        (folder / f"Big-Q8_0-{i:05d}-of-00003.gguf").write_bytes(b"GGUF")
    (folder / "mmproj-Big-F16.gguf").write_bytes(b"GGUF")  # a projector rides along: not a model
    first = folder / "Big-Q8_0-00001-of-00003.gguf"
    assert path_of(capsys, "lmstudio:unsloth/Big-GGUF") == first
    assert path_of(capsys, "lmstudio:unsloth/Big-GGUF:Q8_0") == first
    assert "name its first part" in error_line(
        capsys, "models", "path", "lmstudio:unsloth/Big-GGUF/Big-Q8_0-00002-of-00003.gguf"
    )
    (folder / "Big-Q8_0-00003-of-00003.gguf").unlink()
    assert "Big-Q8_0-00003-of-00003.gguf" in error_line(capsys, "models", "path", "lmstudio:unsloth/Big-GGUF")


def test_a_quant_is_a_whole_token_of_the_name():
    assert folders.quant_matches("x-Q4_K_M.gguf", "q4_k_m")
    assert folders.quant_matches("llama_3_Q4_K_M.gguf", "Q4_K_M")
    assert not folders.quant_matches("x-Q4_K_M.gguf", "Q4_K")
    assert not folders.quant_matches("x-IQ4_XS.gguf", "Q4_XS")


def test_where_each_tool_keeps_its_files(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ollama.models_dir() == tmp_path / ".ollama" / "models"
    assert hugging_face.hub_cache() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hugging_face.hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hugging_face.hub_cache() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hugging_face.hub_cache() == tmp_path / "cache"
    assert lmstudio.models_dirs() == []
    legacy = tmp_path / ".cache" / "lm-studio" / "models"
    legacy.mkdir(parents=True)
    assert lmstudio.models_dirs() == [legacy]  # LM Studio before 0.3
    custom, home = tmp_path / "custom", tmp_path / "elsewhere"
    custom.mkdir()
    home.mkdir()
    (home / "settings.json").write_text(json.dumps({"downloadsFolder": str(custom)}))
    (tmp_path / ".lmstudio-home-pointer").write_text(str(home))
    assert lmstudio.models_dirs() == [custom, legacy]


# -- models list --all ----------------------------------------------------------------------------


def test_list_all_shows_every_source_with_its_metadata(sources, capsys):
    cli.main(["models", "list", "--all", "--json"])
    rows = {row["spec"]: row for row in json.loads(capsys.readouterr().out)}
    ollama, hub = rows["ollama:gemma3:270m"], rows[f"hf:{HF_REPO}"]
    lmstudio = rows[f"lmstudio:{LMSTUDIO_REPO}"]
    assert ollama["source"] == "ollama" and ollama["name"] == "Gemma 3 270m Q4_K_M"
    assert (ollama["architecture"], ollama["quant"], ollama["n_vocab"]) == ("gemma3", "Q4_K_M", 262144)
    assert ollama["has_chat_template"] is False and ollama["size"] == BASE.stat().st_size
    assert (hub["quant"], hub["n_vocab"], hub["has_chat_template"]) == ("Q4_1", 49152, True)
    assert lmstudio["source"] == "lmstudio" and lmstudio["error"] is None
    assert rows["smollm2-135m-instruct"]["source"] == "registry"
    assert rows[f"llm:{LLM_ID}"]["source"] == "llm" and rows[f"llm:{LLM_ID}"]["quant"] == "Q4_1"
    assert rows[f"llamacpp:{HF_REPO}:Q4_1"]["source"] == "llamacpp"
    assert rows["llamacpp:ai_gemma3_270M-Q4_K_M.gguf"]["architecture"] == "gemma3"
    cli.main(["models", "list", "--all"])
    table = capsys.readouterr().out
    assert "ollama:gemma3:270m" in table and "Q4_K_M" in table and "262144" in table
    cli.main(["models", "list"])
    assert "ollama:" not in capsys.readouterr().out  # without --all: as before, and a hint


def test_list_all_specs_resolve_back_and_bad_files_are_one_row(sources, capsys):
    snapshot = sources["hub"] / f"models--{HF_REPO.replace('/', '--')}" / "snapshots" / HF_COMMIT
    (snapshot / "broken-Q8_0.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    cli.main(["models", "list", "--all", "--json"])
    rows = json.loads(capsys.readouterr().out)
    broken = [row for row in rows if row["path"].endswith("broken-Q8_0.gguf")]
    assert broken[0]["spec"] == f"hf:{HF_REPO}:Q8_0" and "truncated or corrupt" in broken[0]["error"]
    for row in rows:
        if ":" in row["spec"]:
            assert path_of(capsys, row["spec"]) == Path(row["path"])


# -- the header's metadata ------------------------------------------------------------------------


def test_the_header_carries_name_quant_vocabulary_and_template():
    base, guide = check_gguf_header(BASE), check_gguf_header(GUIDE)
    assert (base.name, base.file_type, base.quant, base.n_vocab, base.has_chat_template) == (
        "Gemma 3 270m",
        15,
        "Q4_K_M",
        262144,
        False,
    )
    assert (guide.quant, guide.n_vocab, guide.has_chat_template) == ("Q4_1", 49152, True)
    assert display_name(base, BASE) == "Gemma 3 270m Q4_K_M"


def test_display_name_is_printable_and_bounded():
    header = GgufHeader(3, 0, 0, None, 0, 0)
    assert display_name(header, Path("/m/my-model.gguf")) == "my-model"
    hostile = GgufHeader(3, 0, 0, None, 0, 0, name="Evil\n\x1b[31mName\u202e" + "x" * 500, file_type=3)
    shown = display_name(hostile, Path("/m/x.gguf"))
    assert shown.isprintable() and len(shown) <= 80 and shown.startswith("Evil [31mName x") and shown.endswith(" Q4_1")
    named = GgufHeader(3, 0, 0, None, 0, 0, name="Qwen Q4_K_M", file_type=15)
    assert display_name(named, Path("/m/x.gguf")) == "Qwen Q4_K_M"  # the quant once
    assert GgufHeader(3, 0, 0, None, 0, 0, file_type=999).quant is None


# -- property-based: hostile specs and manifests ----------------------------------------------------

SPEC_ALPHABET = st.sampled_from(
    [*"ab09._-/:+", "..", "//", "gemma3", ":270m", ":Q4_1", "/SmolLM2-135M-Instruct-Q4_1.gguf", "\n", "\x00", "é"]
)
SPECS = st.one_of(
    st.sampled_from(["ollama:gemma3:270m", f"hf:{HF_REPO}:Q4_1", f"lmstudio:{LMSTUDIO_REPO}"]),
    st.text(max_size=60),
    st.builds(
        lambda prefix, parts: prefix + "".join(parts),
        st.sampled_from(
            ["ollama:", "hf:", "lmstudio:", "models:", "llm:", "llamacpp:", f"hf:{HF_REPO}", "ollama:gemma3", "llm:s"]
            + [f"llamacpp:{HF_REPO}", "llamacpp:ai_"]
        ),
        st.lists(SPEC_ALPHABET, max_size=12),
    ),
)


def inside(path: Path, roots: list[Path]) -> bool:
    """Built inside one of `roots`, lexically (a symlink there may point anywhere: the tool's own)."""
    normal = os.path.normpath(path)
    return ".." not in path.parts and any(normal.startswith(str(root) + os.sep) for root in roots)


def resolved_or_one_line(spec: str, models_folder: Path) -> Path | None:
    """The file a spec names, or None once its refusal is checked to be one bounded line."""
    try:
        return model_sources.resolve(spec, models_folder)
    except BlendinError as e:
        assert "\n" not in str(e) and "\r" not in str(e) and len(str(e)) < 2000
        return None


@FUZZ
@given(spec=SPECS)
def test_any_spec_is_a_file_inside_its_source_or_one_line(sources, tmp_path, spec):
    roots = [sources["ollama"], sources["hub"], sources["lmstudio"], sources["llamacpp"], tmp_path / "models"]
    path = resolved_or_one_line(spec, tmp_path / "models")
    if path is None:
        return
    if spec.startswith("llm:"):  # llm-gguf's index names files wherever they were registered
        assert path == sources["llm_file"], path
        return
    assert inside(path, roots) and path.is_file(), path


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
LAYER = st.fixed_dictionaries(
    {
        "mediaType": st.sampled_from([ollama.MODEL_MEDIA_TYPE, "application/vnd.ollama.image.template"]) | JSON,
        "digest": st.sampled_from(["sha256:" + "0" * 64, "../../secret", "sha256:../../../secret", "sha256-"]) | JSON,
        "size": st.integers() | JSON,
    }
)
MANIFESTS = st.one_of(
    st.binary(max_size=300),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.lists(LAYER, max_size=3).map(lambda layers: json.dumps({"schemaVersion": 2, "layers": layers}).encode()),
)


@FUZZ
@given(data=MANIFESTS)
def test_any_manifest_is_a_blob_inside_blobs_or_one_line(sources, tmp_path, data):
    (tmp_path / "secret").write_bytes(b"GGUF")
    blobs = sources["ollama"] / "blobs"
    (blobs / ("sha256-" + "0" * 64)).write_bytes(b"GGUF")
    manifest = sources["ollama"] / "manifests" / "registry.ollama.ai" / "library" / "fuzz" / "latest"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_bytes(data)
    path = resolved_or_one_line("ollama:fuzz", tmp_path / "models")
    assert path is None or inside(path, [blobs]) and path.name.startswith("sha256-"), path


LLAMACPP_MANIFESTS = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda name: json.dumps({"ggufFile": {"rfilename": name}}).encode(),
        st.sampled_from(["../x.gguf", "/etc/passwd", "a/../../b.gguf", "SmolLM2-135M-Instruct-Q4_1.gguf", ""])
        | st.text(max_size=30)
        | JSON,
    ),
)


@FUZZ
@given(data=LLAMACPP_MANIFESTS)
def test_any_llamacpp_manifest_is_a_file_inside_the_cache_or_one_line(sources, data):
    cache = sources["llamacpp"]
    (cache / f"manifest={HF_REPO.replace('/', '=')}=Q4_1.json").write_bytes(data)
    path = resolved_or_one_line(f"llamacpp:{HF_REPO}:Q4_1", cache)
    assert path is None or inside(path, [cache]) and path.is_file(), path


LLAMACPP_REFS = st.one_of(
    st.binary(max_size=100),
    st.sampled_from([HF_COMMIT, HF_COMMIT + "\n", "../../../etc", "0" * 40, HF_COMMIT.upper(), ""]).map(str.encode),
)
LLAMACPP_TAGS = st.one_of(
    st.sampled_from(["", ":Q8_0", ":q8_0", ":F16", ":.*", ":Q", ":Q8_0.", "/gemma-3-270m-it-Q8_0.gguf", "/../x.gguf"]),
    st.text(alphabet="Q0123456789_KMF.-*+/", max_size=12).map(lambda t: ":" + t),
)


@FUZZ
@given(ref=LLAMACPP_REFS, ref_name=st.sampled_from(["main", "dev", ".hidden"]), tag=LLAMACPP_TAGS)
def test_any_llamacpp_ref_and_tag_is_a_file_of_the_snapshot_or_one_line(sources, sha256, ref, ref_name, tag):
    cache = sources["llamacpp"]
    folder = cache / f"models--{UNSLOTH.replace('/', '--')}"
    snapshot = folder / "snapshots" / HF_COMMIT
    if not folder.exists():  # the fixture's folder lives through the examples: written once
        write_llamacpp_hub(cache, {"gemma-3-270m-it-Q8_0.gguf": BASE}, sha256)
    refs = snapshot.parent.parent / "refs"
    for old in refs.iterdir():
        old.unlink()
    (refs / ref_name).write_bytes(ref)
    path = resolved_or_one_line(f"llamacpp:{UNSLOTH}{tag}", cache)
    assert path is None or inside(path, [snapshot]) and path.is_file(), path
