"""What every source reads folders with: bounded listings and reads, the checks a file must
pass, the character rules of names, and the choice of one GGUF file in a model folder by
quantization or by name (Hugging Face snapshots, LM Studio).

Every folder, manifest, ref and link is hostile input: listings stop at MAX_ENTRIES, walks at
MAX_DEPTH, reads at their own limit; every failure is one BlendinError line, with file text in
it shown printable and bounded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from blendin_local.errors import BlendinError

MAX_MANIFEST_BYTES = 1 << 20  # an Ollama manifest is a few hundred bytes; a megabyte is not one
MAX_REF_BYTES = 256  # refs/main: a 40-digit commit hash and a newline
MAX_ENTRIES = 10_000  # folder entries looked at per search: a listing, not a crawl of the disk
MAX_DEPTH = 4  # folders below a snapshot or an LM Studio model folder
SHOWN_CANDIDATES = 10

# A Hugging Face repo id part; "--" is the cache's separator and ".." a parent, so neither.
REPO_PART = re.compile(r"(?!.*--)(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
FILE_PART = re.compile(r"(?!\.\.?$)[A-Za-z0-9._+-]{1,255}")
COMMIT = re.compile(r"[0-9a-f]{40}")
QUANT = re.compile(r"[A-Za-z0-9_]{1,32}")
# llama.cpp's split files: <prefix>-%05d-of-%05d.gguf (llama.h, llama_model_load_from_file).
SPLIT = re.compile(r"(.*)-(\d{5})-of-(\d{5})\.gguf")
# A file-name token that looks like a quantization (Q4_K_M, IQ4_XS, F16, BF16, TQ1_0, MXFP4_MOE):
# only used to offer a short spec in listings, which is then checked to name that very file.
_QUANT_TOKEN = re.compile(r"(?:[IT]?Q\d[A-Z0-9_]*|B?F(?:16|32)|MXFP4[A-Z0-9_]*)", re.IGNORECASE)


def shown(text: str, limit: int = 80) -> str:
    """User or file text inside an error line: printable, on one line, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def candidates(names: list[str]) -> str:
    listed = ", ".join(shown(n) for n in names[:SHOWN_CANDIDATES])
    more = len(names) - SHOWN_CANDIDATES
    return listed + (f" and {more} more" if more > 0 else "") if names else "none"


def regular_file(path: Path, what: str) -> Path:
    """`path` if it is a regular file (through symlinks); else the one line saying what it is."""
    if path.is_symlink() and not path.exists():
        raise BlendinError(f"{what}: {shown(str(path), 300)} is a dangling symlink")
    if not path.exists():
        raise BlendinError(f"{what}: {shown(str(path), 300)} does not exist")
    if path.is_dir():
        raise BlendinError(f"{what}: {shown(str(path), 300)} is a directory, not a file")
    if not path.is_file():
        raise BlendinError(f"{what}: {shown(str(path), 300)} is not a regular file")
    return path


def read_small(path: Path, limit: int, what: str) -> bytes:
    regular_file(path, what)
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise BlendinError(f"{what}: cannot read {shown(str(path), 300)} ({e.strerror or e})") from None
    if len(data) > limit:
        raise BlendinError(f"{what}: {shown(str(path), 300)} is larger than {limit} bytes")
    return data


def entries(folder: Path) -> list[os.DirEntry[str]]:
    """A folder's entries, sorted by name, at most MAX_ENTRIES of them; none if it is unreadable."""
    try:
        with os.scandir(folder) as it:
            entries = []
            for entry in it:
                entries.append(entry)
                if len(entries) >= MAX_ENTRIES:
                    break
    except OSError:
        return []
    return sorted(entries, key=lambda e: e.name)


def subfolders(folder: Path) -> list[str]:
    """Names of the folders in `folder`, through symlinks (a fixed depth below, so no loop)."""
    return [e.name for e in entries(folder) if e.is_dir()]


def names(folder: Path) -> list[str]:
    return [e.name for e in entries(folder)]


def gguf_names(folder: Path) -> list[str]:
    return [e.name for e in entries(folder) if e.name.endswith(".gguf") and e.is_file()]


def gguf_files(folder: Path) -> list[str]:
    """GGUF files below `folder` (relative paths, '/'-separated, sorted), bounded in depth and count."""
    found: list[str] = []
    pending = [(folder, "", 0)]
    seen = 0
    while pending and seen < MAX_ENTRIES:
        current, prefix, depth = pending.pop()
        for entry in entries(current):
            seen += 1
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                if depth < MAX_DEPTH:
                    pending.append((Path(entry.path), relative + "/", depth + 1))
            elif entry.name.lower().endswith(".gguf"):
                found.append(relative)
    return sorted(found)


def models_among(files: list[str]) -> list[str]:
    """The files that are each one model: a split model by its first part, and no multimodal
    projectors (mmproj-*.gguf, which ride along with a model and are not one)."""
    return [
        f
        for f in files
        if not f.rsplit("/", 1)[-1].lower().startswith("mmproj")
        and ((split := SPLIT.fullmatch(f)) is None or split.group(2) == "00001")
    ]


def quant_matches(file: str, quant: str) -> bool:
    """`quant` in the file's name, case-insensitively, not inside a longer word: Q4_K is not
    Q4_K_M (no letter, digit or _ may follow), but model_Q4_K_M names Q4_K_M."""
    name = file.rsplit("/", 1)[-1]
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", name, re.IGNORECASE) is not None


def pick_file(folder: Path, what: str, selector: str | None, is_file: bool) -> Path:
    """The model in a model folder that `selector` names: a relative file path, a quantization,
    or (None) the only model there."""
    if is_file:
        assert selector is not None
        return split_first_part(regular_file(folder / selector, what), what)
    files = models_among(gguf_files(folder))
    if selector is not None:
        chosen = [f for f in files if quant_matches(f, selector)]
        if not chosen:
            raise BlendinError(f"{what}: no GGUF file with '{selector}' in its name (files: {candidates(files)})")
    elif not files:
        raise BlendinError(f"{what}: no GGUF files in {shown(str(folder), 300)}")
    else:
        chosen = files
    if len(chosen) > 1:
        raise BlendinError(f"{what}: {len(chosen)} GGUF files match; add :QUANT or a file name: {candidates(chosen)}")
    return split_first_part(regular_file(folder / chosen[0], what), what)


def split_first_part(path: Path, what: str) -> Path:
    """A split model is loaded by llama.cpp from its first part, which finds the others next to
    it by name: so the spec must name the first part, and all parts must be there."""
    split = SPLIT.fullmatch(path.name)
    if split is None:
        return path
    prefix, number, count = split.group(1), int(split.group(2)), int(split.group(3))
    if number != 1:
        raise BlendinError(f"{what}: {path.name} is part {number} of a split model; name its first part")
    missing = [
        f"{prefix}-{i:05d}-of-{count:05d}.gguf"
        for i in range(2, count + 1)
        if not path.with_name(f"{prefix}-{i:05d}-of-{count:05d}.gguf").is_file()
    ]
    if missing:
        raise BlendinError(f"{what}: parts of the split model are missing: {candidates(missing)}")
    return path


def parse_repo_spec(source: str, text: str) -> tuple[str, str, str | None, bool]:
    """ORG/REPO[:QUANT] or ORG/REPO/FILE.gguf -> (org, repo, quant or file, whether a file)."""
    path, _, quant = text.partition(":")
    parts = path.split("/")
    if len(parts) < 2 or not all(REPO_PART.fullmatch(p) for p in parts[:2]):
        raise BlendinError(f"{source}:{shown(text)}: give {source}:ORG/REPO[:QUANT] or {source}:ORG/REPO/FILE.gguf")
    if len(parts) > 2:
        if quant or not parts[-1].lower().endswith(".gguf") or not all(FILE_PART.fullmatch(p) for p in parts[2:]):
            raise BlendinError(f"{source}:{shown(text)}: a file is named by its path in the repo, ending in .gguf")
        return parts[0], parts[1], "/".join(parts[2:]), True
    if quant and not QUANT.fullmatch(quant):
        raise BlendinError(f"{source}:{shown(text)}: '{quant}' is not a quantization name like Q4_K_M")
    return parts[0], parts[1], quant or None, False


def short_specs(source: str, repo: str, file: str, files: list[str]) -> list[str]:
    """Specs that may name `file` of a repo, shortest first; the caller keeps the first that does."""
    stem = file.rsplit("/", 1)[-1].removesuffix(".gguf")
    quants = [t for t in re.split(r"[-.]", stem) if _QUANT_TOKEN.fullmatch(t)]
    return [f"{source}:{repo}", *(f"{source}:{repo}:{q}" for q in quants), f"{source}:{repo}/{file}"]
