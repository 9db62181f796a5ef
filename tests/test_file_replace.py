"""replace_file: the whole new file or the old one, whatever happens while it writes."""

import os
import signal
import stat
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blendin_local.file_replace import replace_file


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.binary(max_size=2000), new=st.one_of(st.binary(max_size=2000), st.text(max_size=500)))
def test_the_file_holds_exactly_the_new_content(tmp_path, old, new):
    path = tmp_path / "f"
    path.write_bytes(old)
    replace_file(path, new)
    assert path.read_bytes() == (new.encode("utf-8") if isinstance(new, str) else new)
    assert _leftovers(tmp_path) == []


def test_a_missing_folder_is_made(tmp_path):
    replace_file(tmp_path / "a" / "b" / "f.json", "{}")
    assert (tmp_path / "a" / "b" / "f.json").read_text() == "{}"


def test_an_existing_file_keeps_its_mode_and_a_new_one_gets_the_umask(tmp_path):
    kept = tmp_path / "kept"
    kept.write_text("old")
    kept.chmod(0o640)
    replace_file(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640
    previous = os.umask(0o027)
    try:
        replace_file(tmp_path / "fresh", "new")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o640


def test_a_symbolic_link_is_followed_not_replaced(tmp_path):
    target = tmp_path / "real.toml"
    target.write_text("old")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    replace_file(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.write_text("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        replace_file(path, "new")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_anything_but_a_regular_file_in_the_way_is_an_oserror_and_stays(tmp_path):
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "fifo")
    for name in ("folder", "fifo", "link"):
        with pytest.raises(OSError, match="not a regular file"):
            replace_file(tmp_path / name, "new")
    assert (tmp_path / "folder").is_dir() and stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode)
    assert _leftovers(tmp_path) == []


_REWRITER = """
import sys
from pathlib import Path
from blendin_local.file_replace import replace_file
path = Path(sys.argv[1])
print("ready", flush=True)
n = 0
while True:
    n += 1
    replace_file(path, str(n) * 50_000)
"""


def test_kill_9_while_rewriting_leaves_one_whole_version(tmp_path):
    """A process killed at any moment of a rewrite leaves a file of one whole version (50,000
    copies of one number), never a mixture or a truncation."""
    path = tmp_path / "f"
    replace_file(path, "0" * 50_000)
    for delay in (0.01, 0.03, 0.05, 0.08, 0.13):
        child = subprocess.Popen([sys.executable, "-c", _REWRITER, str(path)], stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        text = path.read_text()
        number = text[: len(text) // 50_000]
        assert number.isdigit() and text == number * 50_000
