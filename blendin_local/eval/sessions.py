"""The sessions of a run folder: what each `blendin eval` invocation on it ran on.

A resumable run can span days, upgrades and machines, and a greedy text depends on more than
the run's configuration: on the llama.cpp build, whether its repacked kernels are used, and
the threads per model (docs/design.md). These do not change what a run *is* (--resume still
continues it), so they are kept beside it, not compared with it:

    out/sessions.json   [{"started": "2026-12-02T07:00:00Z", "runtime": {...}}, ...]

Each record names its session by index, a resume that continues on another runtime says so in
one line, and `blendin eval report` says when a run's records come from more than one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

from blendin_local.errors import BlendinError
from blendin_local.file_replace import replace_file

SESSIONS_FILE = "sessions.json"
MAX_SESSIONS_BYTES = 4 << 20  # thousands of sessions; a larger file is not one blendin wrote


def read_sessions(folder: Path) -> list[dict]:
    """The folder's sessions, oldest first; none for a run written before they were kept."""
    path = folder / SESSIONS_FILE
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SESSIONS_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise BlendinError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        sessions = json.loads(raw) if len(raw) <= MAX_SESSIONS_BYTES else None
    except (ValueError, RecursionError):
        sessions = None
    if not isinstance(sessions, list) or not all(
        isinstance(s, dict) and isinstance(s.get("runtime"), dict) for s in sessions
    ):
        raise BlendinError(f"{path}: not a readable session list (move it aside to continue the run)")
    return sessions


def runtime_differences(before: Mapping, now: Mapping, prefix: str = "") -> list[tuple[str, object, object]]:
    """(setting, value there, value now) for each setting two runtimes differ in; a nested
    setting is named by its path, 'base.threads'."""
    out: list[tuple[str, object, object]] = []
    for key in sorted(set(before) | set(now), key=str):
        a, b = before.get(key), now.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += runtime_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def runtime_changes(before: Mapping, now: Mapping) -> list[str]:
    """What differs between two runtimes, one phrase per setting: 'base.threads 2 there, 1 now'."""
    return [f"{key} {_shown(a)} there, {_shown(b)} now" for key, a, b in runtime_differences(before, now)]


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def start_session(folder: Path, runtime: dict, now: datetime | None = None) -> tuple[int, list[str]]:
    """Add this invocation's session: (its index, what differs from the last session's runtime)."""
    sessions = read_sessions(folder)
    changes = runtime_changes(sessions[-1]["runtime"], runtime) if sessions else []
    started = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    sessions.append({"started": started, "runtime": runtime})
    _replace(folder / SESSIONS_FILE, json.dumps(sessions, indent=1, sort_keys=True))
    return len(sessions) - 1, changes


def _replace(path: Path, text: str) -> None:
    """Write the whole file or leave the old one: a kill -9 between two sessions loses neither."""
    try:
        replace_file(path, text)
    except OSError as e:
        raise BlendinError(f"{path}: cannot write it: {e.strerror or e}") from None


def sessions_line(sessions: list[dict], records: Iterable[dict]) -> str:
    """For the report: nothing when the records ran on one runtime as far as the folder knows;
    else how many ran in which session, and the settings their runtimes differ in."""
    indexes = [r.get("session") for r in records]
    counts = Counter(i for i in indexes if type(i) is int and 0 <= i < len(sessions))  # not a bool, nor a list
    known = sorted(counts)
    unknown = len(indexes) - counts.total()
    runtimes = [sessions[i]["runtime"] for i in known]
    differing = sorted({key for r in runtimes[1:] for key, _, _ in runtime_differences(runtimes[0], r)})
    if not differing and not (unknown and known):
        return ""
    parts = [f"{unknown} from before sessions were kept"] if unknown else []
    parts += [f"{counts[i]} in session {i + 1} (started {sessions[i].get('started', '?')})" for i in known]
    what = f"; their runtimes differ in {', '.join(differing)}" if differing else ""
    return (
        "Runtimes: greedy texts can part at near-ties between llama.cpp builds, kernels and thread"
        f" counts (docs/design.md), and these records ran in several sessions: {'; '.join(parts)}{what}.\n\n"
    )
