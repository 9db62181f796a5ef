"""A run folder: its configuration, and one JSON line per finished sample, per method.

    out/config.json        what was run (dataset, subset, models, settings, judge)
    out/<method>.jsonl     one line per sample, appended and flushed the moment it is scored
    out/sessions.json      what each invocation ran on (sessions.py); records name their session

A folder holding a different configuration is refused, never mixed, and so is one that another
process is running (its lock file, .blendin-eval.lock, is freed by the kernel when that process
ends, however it ends). Resuming reads the lines already there and skips those samples. Each
record goes to disk with its newline in one write, and a failed write is undone, so only a
crash (kill -9, power loss) can leave a torn line, and only the last one: reading drops it (or
keeps it when just its newline is missing), and resuming first cuts it from the file, so that
the next record starts on a line of its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock

from filelock import FileLock, Timeout

from blendin_local.errors import BlendinError
from blendin_local.eval.sessions import start_session
from blendin_local.file_replace import replace_file

CONFIG_FILE = "config.json"
# Two processes running one folder would both run the samples it lacks and append each twice.
LOCK_FILE = ".blendin-eval.lock"


def _differences(old: dict, new: dict, assumed: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, assumed.get(key)), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            nested = assumed.get(key)
            out += _differences(a, b, nested if isinstance(nested, Mapping) else {}, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {a!r} there, {b!r} now")
    return out


@dataclass
class RunFolder:
    path: Path
    config: dict
    done: dict[str, set[str]] = field(default_factory=dict)  # method -> sample ids on disk
    earlier: list[dict] = field(default_factory=list)  # the records found on disk when opened
    session: int | None = None  # this invocation's index in sessions.json, which each record carries
    runtime_changes: list[str] = field(default_factory=list)  # from the last session's runtime
    held: FileLock | None = None  # the folder's lock, while this process runs it
    made: bool = False  # this process made the folder
    _lock: Lock = field(default_factory=Lock)

    @classmethod
    def open(
        cls, path: Path, config: dict, resume: bool, assumed: Mapping | None = None, runtime: dict | None = None
    ) -> RunFolder:
        """The folder for `config`: new, or (with resume) the same configuration continued, held
        for this process until `close()` or its exit: `hold`, then `start`."""
        folder = cls.hold(path)
        try:
            folder.start(config, resume, assumed, runtime)
        except BaseException:
            folder.close()
            raise
        return folder

    @classmethod
    def hold(cls, path: Path) -> RunFolder:
        """The folder, made if need be and held for this process until `close()` or its exit (a
        kill -9 included: the lock is the kernel's); nothing in it is read yet."""
        if path.exists() and not path.is_dir():
            raise BlendinError(f"{path} is a file, not a folder: use another --out folder")
        made = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file on the way, no permission, a full disk
            raise BlendinError(f"{path}: cannot create the folder: {e.strerror or e}") from None
        if not (path / CONFIG_FILE).exists() and not _counts_as_empty(path):
            raise BlendinError(f"{path} is not empty and holds no run configuration: use another --out folder")
        return cls(path, {}, held=_hold(path), made=made)

    def check(self, known: Mapping, resume: bool, assumed: Mapping | None = None) -> None:
        """Refuse early what the folder's run cannot continue, from the keys of the configuration
        known before the models load (all but the models): a mistyped --out or a forgotten
        --resume costs no model load. `start` compares the whole configuration."""
        self._refuse(known, resume, assumed or {}, whole=False)

    def start(self, config: dict, resume: bool, assumed: Mapping | None = None, runtime: dict | None = None) -> None:
        """Compare the whole configuration with the stored one, write it, and read the samples
        already done; `runtime`, if given, starts a session.

        `assumed` holds, in config's shape, the value a key absent from a stored configuration
        stands for: a setting added since that run was written ran as its default, so a run
        started before an upgrade resumes after it."""
        self._refuse(config, resume, assumed or {}, whole=True)
        config_file = self.path / CONFIG_FILE
        try:
            replace_file(config_file, json.dumps(config, indent=2, sort_keys=True))
        except OSError as e:
            raise BlendinError(f"{config_file}: cannot write it: {e.strerror or e}") from None
        self.config = config
        for method_file in self.path.glob("*.jsonl"):
            records = read_records(method_file, repair=True)
            self.done[method_file.stem] = {record["id"] for record in records}
            self.earlier += records
        if runtime is not None:
            self.session, self.runtime_changes = start_session(self.path, runtime)

    def _refuse(self, config: Mapping, resume: bool, assumed: Mapping, whole: bool) -> None:
        config_file = self.path / CONFIG_FILE
        if not config_file.exists():
            return
        stored = _read_config(config_file)
        if not whole:
            stored = {key: value for key, value in stored.items() if key in config}
        diff = _differences(stored, dict(config), assumed)
        if diff:
            raise BlendinError(
                f"{self.path} holds a run with a different configuration ({'; '.join(diff[:3])}): "
                "use another --out folder"
            )
        if not resume:
            raise BlendinError(
                f"{self.path} already holds a run of this dataset and these settings: pass --resume to"
                " continue it, or use another --out"
            )

    def close(self) -> None:
        """Let another process continue the run. A folder this process made and never started a
        run in (the models failed to load, say) goes again."""
        if self.held is None:
            return
        self.held.release()
        self.held = None
        if self.made and not (self.path / CONFIG_FILE).exists():
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                pass  # something else was put there meanwhile: it stays

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def is_done(self, method: str, sample_id: str) -> bool:
        return sample_id in self.done.get(method, ())

    def append(self, method: str, record: dict) -> None:
        line = _record_line(record if self.session is None else {**record, "session": self.session})
        with self._lock:
            fd = os.open(self.path / f"{method}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                try:
                    _write_all(fd, line)
                    os.fsync(fd)
                except OSError:  # a disk full, say: leave no torn line for the next record to follow
                    os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
            self.done.setdefault(method, set()).add(record["id"])


def _counts_as_empty(path: Path) -> bool:
    """Nothing in the folder but a lock file and the temporaries a kill -9 can leave behind."""
    return all(f.name == LOCK_FILE or (f.name.startswith(".") and f.name.endswith(".tmp")) for f in path.iterdir())


def _hold(path: Path) -> FileLock:
    lock = FileLock(str(path / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise BlendinError(
            f"{path} is being run by another blendin eval: wait for it to end, or use another --out"
        ) from None
    except OSError as e:
        raise BlendinError(f"{path}: cannot lock it for this run: {e.strerror or e}") from None
    return lock


def _record_line(record: dict) -> bytes:
    try:
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a judge's JSON may carry \ud800): ASCII escapes read back the same
        return (json.dumps(record) + "\n").encode("ascii")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_config(config_file: Path) -> dict:
    try:
        config = json.loads(config_file.read_bytes())
    except (ValueError, RecursionError):
        config = None
    if not isinstance(config, dict):
        raise BlendinError(f"{config_file}: not a readable run configuration")
    return config


def _parse_record(line: bytes) -> dict | None:
    """The record on one line, or None if the line is not one."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return record if isinstance(record, dict) and isinstance(record.get("id"), str) else None


def read_records(path: Path, repair: bool = False) -> list[dict]:
    """The samples of one method file. A last line without its newline was cut by a crash: it is
    kept if it holds a whole record and dropped if not; with `repair` the file is then made to end
    on a newline (given to the whole record, or the torn bytes cut). Any other bad line is an error."""
    raw = path.read_bytes()
    body, _, tail = raw.rpartition(b"\n")
    records = []
    for number, line in enumerate(body.split(b"\n"), 1):
        if not line.strip():
            continue
        record = _parse_record(line)
        if record is None:
            raise BlendinError(f"{path}, line {number}: not a JSON record with an id")
        records.append(record)
    last = _parse_record(tail) if tail.strip() else None
    if last is not None:
        records.append(last)
    if repair and tail:
        with path.open("r+b") as f:
            if last is not None:
                f.seek(len(raw))
                f.write(b"\n")
            else:
                f.truncate(len(raw) - len(tail))
            f.flush()
            os.fsync(f.fileno())
    return records


def read_run(path: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(configuration, method -> records) of a finished or partial run folder."""
    config_file = path / CONFIG_FILE
    if not config_file.exists():
        raise BlendinError(f"{path}: not a run folder (no {CONFIG_FILE})")
    return _read_config(config_file), {f.stem: read_records(f) for f in sorted(path.glob("*.jsonl"))}
