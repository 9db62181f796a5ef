"""`blendin chat` survives any input line (issue 12, defect 6), on scripted models.

A line that is not UTF-8 (stdin bytes decoded with surrogateescape), NULs, huge or non-finite
numbers for /gamma and /alpha, /save to paths that cannot be written: each gets one line of
explanation and the session goes on with its conversation. No line reaches the catch-all for
faults nobody foresaw; a fault of the program itself (here, a model that raises) does, and the
conversation outlives it too.
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_model import EOS, ScriptedModel

from blendin_local.engine.bridge import VocabBridge, Vocabulary
from blendin_local.engine.generation import GenerationSettings
from blendin_local.interfaces.chat import UNEXPECTED_ERROR, BufferOutput, ChatSession
from blendin_local.pair import BlendPair

PIECES = [EOS, b"Q", b" word", b"word", b" ", b".", b"\n", b"a", b"b", b"Question:", b"\x00"]
SETTINGS = GenerationSettings(guide_prompt="plain", max_tokens=3)  # a scripted model has no chat template


def writes_words(seen):
    return {b" word": 5.0}


def scripted_pair(rule=writes_words) -> BlendPair:
    base, guide = ScriptedModel("base", PIECES, rule), ScriptedModel("guide", PIECES, rule)
    vocab = lambda m: Vocabulary(tuple(m.pieces), m.eog_ids, m.eos_id)  # noqa: E731
    return BlendPair(
        base,
        guide,
        VocabBridge.build(vocab(base), vocab(guide), base_tokenize=base.tokenize, guide_tokenize=guide.tokenize),
    )


def stdin_line(data: bytes) -> str:
    """A line as `blendin chat` reads it from stdin."""
    return data.decode("utf-8", "surrogateescape")


NUMBERS = st.one_of(
    st.sampled_from(
        [
            "nan",
            "-nan",
            "inf",
            "-inf",
            "1e999",
            "-1e999",
            "9" * 5000,
            "1_0",
            "0x10",
            "",
            "''",
            "1 2",
            "auto",
            "AUTO",
            "\x00",
            "\udcff",
        ]
    ),
    st.floats().map(repr),
    st.integers().map(str),
    st.text(max_size=20),
)
UNWRITABLE = [
    "/",
    "/proc/blendin/x.json",
    "a\x00b.json",
    "~0",
    "~a\x00b/x.json",
    "x" * 5000,
    "''",
    '"unclosed',
    "a b c",
]
LINES = st.one_of(
    st.binary(max_size=60).map(stdin_line),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=60),  # lone surrogates included
    st.tuples(st.sampled_from(["/gamma", "/alpha", "/GAMMA", "/alpha "]), NUMBERS).map(" ".join),
    st.tuples(
        st.sampled_from(["/method", "/trace", "/save", "/reset", "/settings", "/help", "/nope", "/"]),
        st.one_of(st.sampled_from(UNWRITABLE + ["blendin", "on", "off", "proxy", ""]), st.text(max_size=10)),
    ).map(" ".join),
)


def session(rule=writes_words) -> tuple[ChatSession, BufferOutput]:
    out = BufferOutput()
    return ChatSession(scripted_pair(rule), SETTINGS, out), out


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, max_size=8))
def test_no_line_ends_the_session_or_loses_the_conversation(lines, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a generated /save name lands here
    lines = [line for line in lines if line.strip().lower() not in ("/exit", "/quit")]
    chat, out = session()
    chat.run(["Q first", *lines, "Q last", f"/save {tmp_path / 'kept.json'}", "/exit"])
    assert not any(line.startswith(UNEXPECTED_ERROR) for line in out.infos()), out.infos()
    assert all("\n" not in line for line in out.infos())
    saved = json.loads((tmp_path / "kept.json").read_text(encoding="utf-8"))
    questions = [m["content"] for m in saved["messages"] if m["role"] == "user"]
    assert questions[-1] == "Q last" and (questions[0] == "Q first" or "/reset" in " ".join(lines).lower())


def test_the_issues_lines_each_get_one_line_and_the_chat_goes_on(tmp_path):
    chat, out = session()
    chat.run(
        [
            stdin_line(b"Hi \xff there"),
            "/gamma nan",
            "/alpha 1e999",
            f"/save {tmp_path}/no/such/dir/x.json",
            "/save a\x00b",
            "/save ~0/x.json",  # a user who does not exist: Path.expanduser raised RuntimeError
            "Q",
            "/exit",
        ]
    )
    infos = out.infos()
    assert infos[0] == "that line is not valid UTF-8 (byte 0xff at character 3): ignored"
    assert infos[1].startswith("error: invalid gamma") and infos[2].startswith("error: invalid alpha")
    assert (
        infos[3].startswith("error: cannot write") and infos[4] == "error: cannot write 'a\\x00b': embedded null byte"
    )
    assert infos[5] == "error: cannot write ~0/x.json: No such file or directory"
    assert len(chat.turns) == 1 and chat.settings.gamma == SETTINGS.gamma


def test_a_fault_of_the_program_is_reported_and_the_conversation_kept():
    def breaks_on_second_question(seen):
        if b"".join(seen).count(b"Question:") > 1:
            raise RuntimeError("model fault")
        return {EOS: 5.0}

    chat, out = session(breaks_on_second_question)
    chat.run(["Q one", "Q two", "/settings", "/exit"])
    assert [line for line in out.infos() if line.startswith(UNEXPECTED_ERROR)] == [
        f"{UNEXPECTED_ERROR} RuntimeError: model fault (the conversation is kept; /save writes it)"
    ]
    assert len(chat.turns) == 1 and out.infos()[-1].endswith("1 turns in the history")
