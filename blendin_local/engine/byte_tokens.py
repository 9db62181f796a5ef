"""Tokens for an arbitrary byte string, with exactly those bytes.

Committed text reaches a model as bytes it did not write itself (the other model's tokens, or a
guide's words). Its own tokenizer does the work where it can; where it cannot (incomplete UTF-8,
which llama.cpp must never see, or a tokenizer that would add a space prefix), the bytes are
covered greedily by the longest tokens of the vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from blendin_local.engine.bridge import UNMAPPED, PrefixFinder


def tokens_for_bytes(
    tokenize: Callable[[bytes], list[int]], pieces: Sequence[bytes], finder: PrefixFinder, data: bytes
) -> list[int]:
    text, broken = split_utf8(data)
    ids = tokenize(text) if text else []
    if b"".join(pieces[t] for t in ids) != text:
        ids = greedy_tokens(pieces, finder, text)
    return ids + greedy_tokens(pieces, finder, broken)


def greedy_tokens(pieces: Sequence[bytes], finder: PrefixFinder, data: bytes) -> list[int]:
    ids = []
    while data:
        token = finder.longest(data)
        if token == UNMAPPED:
            data = data[1:]  # a byte this vocabulary cannot write at all: the model never sees it
            continue
        ids.append(token)
        data = data[len(pieces[token]) :]
    return ids


def split_utf8(data: bytes) -> tuple[bytes, bytes]:
    """(the longest prefix that is complete UTF-8, the rest)."""
    try:
        data.decode("utf-8")
        return data, b""
    except UnicodeDecodeError as e:
        return data[: e.start], data[e.start :]
