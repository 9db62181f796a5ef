"""Writing the user registry keeps what the user wrote in it: comments, order and layout of the
entries a command does not change. Whatever the old file, the new one reads back as intended."""

import os
import subprocess
import sys

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from blendin_local.backends import registry
from blendin_local.backends.registry import REGISTRY_HEADER, read_registry_file, registry_file_text, tomllib
from blendin_local.errors import BlendinError

HAND_WRITTEN = """\
# my models, kept by hand
[models.llama8b]  # the text model, not the instruct one
spec = "ollama:llama3.1:8b-text-q4_K_M"
description = "8B base"   # from ollama pull

# the guide I use most
[models.small]
path = "/models/small.gguf"

[pairs.mine]
base = "llama8b"
guide = "small"
gamma = 0.3  # lower: this base is surer than the paper's
"""


def test_a_change_keeps_the_comments_and_order_of_what_it_does_not_touch():
    data = tomllib.loads(HAND_WRITTEN)
    data["models"]["new"] = {"spec": "hf:org/repo:Q4_K_M", "role": "guide"}
    del data["pairs"]
    text = registry_file_text(HAND_WRITTEN, data)
    assert tomllib.loads(text) == data
    for kept in (
        "# my models, kept by hand",
        "[models.llama8b]  # the text model, not the instruct one",
        'description = "8B base"   # from ollama pull',
        "# the guide I use most",
    ):
        assert kept in text
    assert "gamma" not in text and text.index("llama8b") < text.index("small") < text.index("new")


def test_a_changed_entry_is_rewritten_and_the_others_are_not():
    data = tomllib.loads(HAND_WRITTEN)
    data["pairs"]["mine"]["gamma"] = 0.5
    text = registry_file_text(HAND_WRITTEN, data)
    assert tomllib.loads(text) == data
    assert "# from ollama pull" in text and "[models.llama8b]  # the text model" in text


def test_without_a_file_or_with_nothing_left_the_file_is_the_header_and_the_entries():
    data = {"pairs": {"p": {"base": "a", "guide": "b"}}}
    text = registry_file_text(None, data)
    assert text.startswith(REGISTRY_HEADER) and tomllib.loads(text) == data
    assert tomllib.loads(registry_file_text(HAND_WRITTEN, {})) == {}


NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
MODEL = st.one_of(
    st.fixed_dictionaries({"spec": TEXT}, optional={"role": st.sampled_from(["base", "guide"]), "description": TEXT}),
    st.fixed_dictionaries({"path": TEXT}),
)
PAIR = st.fixed_dictionaries(
    {"base": TEXT, "guide": TEXT}, optional={"gamma": st.floats(0, 1), "ctx_size": st.integers(16, 2**31 - 1)}
)
REGISTRY = st.fixed_dictionaries(
    {},
    optional={"models": st.dictionaries(NAMES, MODEL, max_size=3), "pairs": st.dictionaries(NAMES, PAIR, max_size=3)},
)
COMMENT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=15).map(lambda s: "# " + s)


def hand_edited(data: dict, comments: list[tuple[int, str]], inline: bool) -> str:
    """`data` as a user might have written it: comments between lines, perhaps inline tables."""
    lines = tomlkit.dumps(data).rstrip("\n").split("\n")  # not splitlines: a value may hold U+0085
    if inline:  # `[models]` with `name = {...}` lines instead of one table per entry
        lines = []
        for kind, tables in data.items():
            lines.append(f"[{kind}]")
            lines += [
                f"{tomlkit.dumps({name: tomlkit.inline_table()}).split('=')[0]}= " + _inline(t)
                for name, t in tables.items()
            ]
    for position, comment in sorted(comments, reverse=True):
        lines.insert(position % (len(lines) + 1), comment)
    return "\n".join(lines) + "\n"


def _inline(table: dict) -> str:
    inline = tomlkit.inline_table()
    inline.update(table)
    return inline.as_string()


@settings(max_examples=300, deadline=None)
@given(
    old=REGISTRY,
    new=REGISTRY,
    comments=st.lists(st.tuples(st.integers(0, 50), COMMENT), max_size=4),
    inline=st.booleans(),
)
def test_any_old_file_and_any_new_entries_read_back_as_the_new_entries(old, new, comments, inline):
    old_text = hand_edited(old, comments, inline)
    assert tomllib.loads(old_text) == old  # the user's file is valid TOML holding `old`
    text = registry_file_text(old_text, new)
    assert tomllib.loads(text) == new
    if all(old.values()) and all(new.values()):  # no empty [models] or [pairs]: the user's layout is kept
        assert not text.startswith(REGISTRY_HEADER)


def test_a_writer_whose_text_does_not_read_back_writes_nothing(monkeypatch):
    monkeypatch.setattr(tomlkit, "dumps", lambda data: 'spec = "\x7f"\n')  # as tomlkit 0.9 wrote DEL
    with pytest.raises(BlendinError, match="does not read back: upgrade tomlkit"):
        registry_file_text(HAND_WRITTEN, {"models": {"m": {"spec": "\x7f"}}})


_ADDER = """
import sys
from blendin_local.backends.registry import add_model
who, model, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    add_model(f"{who}-{i}", model, role="guide")
"""


def test_models_added_by_several_processes_at_once_are_all_kept(tmp_path):
    """Each `models add` reads the file, adds its entry and writes it back: without one writer at
    a time, a process writes over the entry another has just added."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    writers = [
        subprocess.Popen([sys.executable, "-c", _ADDER, f"p{w}", str(model), "15"], env=env, stderr=subprocess.PIPE)
        for w in range(4)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    data = read_registry_file(tmp_path / "config" / "blendin" / "registry.toml")
    assert sorted(data["models"]) == sorted(f"p{w}-{i}" for w in range(4) for i in range(15))


def test_a_registry_another_process_keeps_locked_is_one_error_after_the_wait(tmp_path, monkeypatch):
    config = tmp_path / "config" / "blendin"
    config.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire();"
            " print('held', flush=True); time.sleep(60)",
            str(config / ".registry.toml.lock"),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        monkeypatch.setattr(registry, "EDIT_WAIT_S", 0.3)
        with pytest.raises(BlendinError, match="another blendin has been changing it"):
            registry.add_model("m", "ollama:x", check=False)
    finally:
        holder.kill()
        holder.wait()
    registry.add_model("m", "ollama:x", check=False)  # the kernel freed the killed holder's lock
    assert read_registry_file(config / "registry.toml")["models"]["m"] == {"spec": "ollama:x"}
