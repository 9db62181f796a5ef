"""engine/messages.py: OpenAI-style message dicts read into the engine's Messages, or one
MessageError naming the field, for any input."""

from hypothesis import given
from hypothesis import strategies as st

from blendin_local.engine.messages import MessageError, read_conversation
from blendin_local.engine.prompts import Message


def test_dicts_with_string_or_text_part_content_read_as_messages():
    conversation = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "Italy?"}]},
    ]
    assert read_conversation(conversation) == [
        Message("system", "Be brief."),
        Message("user", "Capital of France?"),
        Message("assistant", ""),
        Message("user", "And Italy?"),
    ]


def test_messages_and_dicts_mix():
    assert read_conversation(
        [Message("user", "a"), {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    )[1] == Message("assistant", "b")


def check_refused(conversation, field: str, words: str) -> None:
    try:
        read_conversation(conversation)
    except MessageError as e:
        assert e.field == field and words in str(e) and "\n" not in str(e)
    else:
        raise AssertionError(f"{conversation!r} was accepted")


def test_what_does_not_fit_names_its_field():
    check_refused([], "messages", "empty")
    check_refused([{"role": "tool", "content": "x"}], "messages[0].role", "'tool' is not supported")
    check_refused([{"content": "x"}], "messages[0].role", "role must be a string")
    check_refused([{"role": "user", "content": [{"type": "image_url"}]}], "messages[0].content", "only text")
    check_refused([{"role": "user", "content": 3}], "messages[0].content", "not int")
    check_refused(["hello"], "messages[0]", "a message is a dict")
    check_refused([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "messages[1].role", "first")
    check_refused([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "messages", "last")


def test_a_huge_role_is_quoted_short():
    check_refused([{"role": "x" * 100_000, "content": "a"}], "messages[0].role", "is not supported")
    try:
        read_conversation([{"role": "x" * 100_000, "content": "a"}])
    except MessageError as e:
        assert len(str(e)) < 200


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
MESSAGE = st.one_of(
    JSON,
    st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(["system", "user", "assistant", "developer", "tool"]), JSON)},
        optional={"content": st.one_of(st.text(max_size=20), JSON, st.lists(JSON, max_size=3))},
    ),
)


@given(st.lists(MESSAGE, max_size=5))
def test_any_input_reads_or_is_one_message_error(conversation):
    try:
        messages = read_conversation(conversation)
    except MessageError as e:
        assert "\n" not in str(e) and e.field.startswith("messages")
    else:
        assert messages and messages[-1].role == "user"
        assert all(m.role in ("system", "user", "assistant") and isinstance(m.content, str) for m in messages)
        assert all(m.role != "system" for m in messages[1:])
