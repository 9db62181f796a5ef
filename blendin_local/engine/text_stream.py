"""Committed bytes to printable text: only complete UTF-8 goes out, and stop strings end it.

Text that could still turn into a stop string is held back until it cannot, so a stop string
never reaches the output, even when it arrives split over several tokens.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    def __init__(self, stops: Sequence[str] = ()):
        self.stops = [s for s in stops if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # everything decoded so far, up to a stop string
        self.emitted = 0  # characters of `text` handed out
        self.stopped_by: str | None = None

    def feed(self, data: bytes) -> str:
        """Decode more bytes; return the newly printable text."""
        if self.stopped_by is not None:
            return ""
        start = max(0, len(self.text) - max((len(s) for s in self.stops), default=0))
        self.text += self._decoder.decode(data)
        cut = self._first_stop(start)
        if cut is not None:
            self.text = self.text[:cut]
            return self._emit(len(self.text))
        return self._emit(len(self.text) - self._held_back())

    def finish(self) -> str:
        """The rest, at the end of generation (a dangling partial character becomes U+FFFD)."""
        if self.stopped_by is None:
            self.text += self._decoder.decode(b"", final=True)
        return self._emit(len(self.text))

    def _first_stop(self, start: int) -> int | None:
        best = None
        for stop in self.stops:
            i = self.text.find(stop, start)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, stop)
        if best is None:
            return None
        self.stopped_by = best[1]
        return best[0]

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is the start of some stop string."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.text)), longest, -1):
                if self.text.endswith(stop[:n]):
                    longest = n
                    break
        return longest

    def _emit(self, upto: int) -> str:
        upto = max(upto, self.emitted)
        out = self.text[self.emitted : upto]
        self.emitted = upto
        return out
