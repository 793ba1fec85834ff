"""Token bytes to text, safely: valid UTF-8 at every event, stop strings never half-emitted."""

from __future__ import annotations

import codecs


class TextStream:
    """Turns a sequence's token bytes into text deltas.

    Two things are held back: the bytes of a UTF-8 character split across
    tokens (a Chinese character is often two or three tokens), and any tail
    of the text that could still become a stop string. Once a stop string
    appears, the text before it is released and the rest is dropped.
    """

    def __init__(self, stop: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to emit."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(data)
        if not self._stop:
            out, self._pending = self._pending, ""
            return out
        hit = min((i for i in (self._pending.find(s) for s in self._stop) if i >= 0), default=-1)
        if hit >= 0:
            self.stopped = True
            out, self._pending = self._pending[:hit], ""
            return out
        # Keep the longest tail that is a prefix of some stop string.
        keep = 0
        for n in range(min(self._hold, len(self._pending)), 0, -1):
            tail = self._pending[-n:]
            if any(s.startswith(tail) for s in self._stop):
                keep = n
                break
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def flush(self) -> str:
        """End of generation: release whatever is held (a partial stop match is plain text)."""
        if self.stopped:
            return ""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return out
