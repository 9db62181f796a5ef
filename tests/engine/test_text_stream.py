"""Streaming text: complete UTF-8 only, stop strings never printed, even split over tokens."""

from blendin_local.engine.text_stream import TextStream


def feed_all(stream, chunks):
    return "".join(stream.feed(c) for c in chunks) + stream.finish()


def test_multibyte_characters_wait_until_complete():
    stream = TextStream()
    smile = "🙂".encode()
    assert stream.feed(b"ok " + smile[:2]) == "ok "
    assert stream.feed(smile[2:]) == "🙂"


def test_a_dangling_partial_character_is_replaced_at_the_end():
    stream = TextStream()
    assert feed_all(stream, [b"a", "é".encode()[:1]]) == "a\ufffd"


def test_stop_string_split_over_tokens_is_held_back_and_cut():
    stream = TextStream(["\nQuestion:"])
    out = feed_all(stream, [b"Paris.", b"\n", b"Quest", b"ion: what"])
    assert out == "Paris."
    assert stream.stopped_by == "\nQuestion:"
    assert stream.text == "Paris."


def test_held_back_text_is_released_when_it_cannot_be_a_stop():
    stream = TextStream(["\nQuestion:"])
    assert stream.feed(b"a\nQue") == "a"
    assert stream.feed(b"en") == "\nQueen"


def test_earliest_stop_wins():
    stream = TextStream(["END", "\n\n"])
    assert feed_all(stream, [b"one\n\ntwo END"]) == "one"
    assert stream.stopped_by == "\n\n"


def test_nothing_after_a_stop():
    stream = TextStream(["x"])
    stream.feed(b"abxcd")
    assert stream.feed(b"more") == ""
    assert stream.finish() == ""
    assert stream.text == "ab"
