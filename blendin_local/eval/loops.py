"""Whether an answer loops, measured on its words (independent of any tokenizer, so that methods
writing with different models compare): some word n-gram occurs `times` or more times."""

from __future__ import annotations

import re
from collections import Counter

LOOP_NGRAM = 4  # words
LOOP_TIMES = 3  # occurrences of one n-gram that make a loop
_WORD = re.compile(r"\w+")


def loops(text: str, ngram: int = LOOP_NGRAM, times: int = LOOP_TIMES) -> bool:
    """Whether some n-gram of `ngram` words (case-folded, punctuation ignored) occurs at least
    `times` times in `text`."""
    words = _WORD.findall(text.casefold())
    counts = Counter(tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1))
    return any(count >= times for count in counts.values())
