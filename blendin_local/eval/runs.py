"""A run folder: its configuration, and one JSON line per finished sample, per method.

    out/config.json        what was run (dataset, subset, models, settings, judge)
    out/<method>.jsonl     one line per sample, appended and flushed the moment it is scored

A folder holding a different configuration is refused, never mixed. Resuming reads the lines
already there (a line cut short by a crash is dropped) and skips those samples.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock

from ..errors import BlendinError

CONFIG_FILE = "config.json"


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} there, {b!r} now")
    return out


@dataclass
class RunFolder:
    path: Path
    config: dict
    done: dict[str, set[str]] = field(default_factory=dict)  # method -> sample ids on disk
    earlier: list[dict] = field(default_factory=list)  # the records found on disk when opened
    _lock: Lock = field(default_factory=Lock)

    @classmethod
    def open(cls, path: Path, config: dict, resume: bool) -> "RunFolder":
        """The folder for `config`: new, or (with resume) the same configuration continued."""
        config_file = path / CONFIG_FILE
        if config_file.exists():
            try:
                old = json.loads(config_file.read_text())
            except ValueError:
                raise BlendinError(f"{config_file}: not a readable run configuration") from None
            diff = _differences(old, config)
            if diff:
                raise BlendinError(f"{path} holds a run with a different configuration ({'; '.join(diff[:3])}): "
                                   "use another --out folder")
            if not resume:
                raise BlendinError(f"{path} already holds this run: pass --resume to continue it, or use another --out")
        elif path.exists() and any(path.iterdir()):
            raise BlendinError(f"{path} is not empty and holds no run configuration: use another --out folder")
        path.mkdir(parents=True, exist_ok=True)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
        folder = cls(path, config)
        for method_file in path.glob("*.jsonl"):
            records = read_records(method_file, repair=True)
            folder.done[method_file.stem] = {record["id"] for record in records}
            folder.earlier += records
        return folder

    def is_done(self, method: str, sample_id: str) -> bool:
        return sample_id in self.done.get(method, ())

    def append(self, method: str, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, (self.path / f"{method}.jsonl").open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
            self.done.setdefault(method, set()).add(record["id"])


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """The samples of one method file. A last line cut short by a crash is dropped (and, with
    `repair`, cut from the file so that appending goes on cleanly); any other bad line is an error."""
    records = []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    complete, tail = lines[:-1], lines[-1]
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            raise BlendinError(f"{path}, line {number}: not a JSON record") from None
    if tail.strip():
        try:
            records.append(json.loads(tail))
        except ValueError:
            if repair:
                with path.open("r+b") as f:
                    f.truncate(len(raw) - len(tail))
    return records


def read_run(path: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(configuration, method -> records) of a finished or partial run folder."""
    config_file = path / CONFIG_FILE
    if not config_file.exists():
        raise BlendinError(f"{path}: not a run folder (no {CONFIG_FILE})")
    config = json.loads(config_file.read_text())
    return config, {f.stem: read_records(f) for f in sorted(path.glob("*.jsonl"))}
