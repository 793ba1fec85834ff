"""Where a JSON value ends in text that is still arriving, without parsing it.

The tool-call parser streams a call's arguments while the model writes them, so it must know
when the value is complete from the text seen so far; :class:`JsonScanner` tracks strings and
bracket nesting only, and the finished text is checked with ``json.loads`` where that matters.
"""

from __future__ import annotations

import json

# JSON's whitespace (RFC 8259), which may surround any value.
WS = " \t\r\n"


class JsonScanner:
    """Finds where one JSON object, array or string ends, fed incrementally.

    It tracks strings and bracket nesting only; the finished text is checked
    with ``json.loads`` where that matters.
    """

    def __init__(self, pos: int, depth: int = 0) -> None:
        self.pos = pos
        self.stack = ["{"] * depth
        self.in_str = False
        self.esc = False
        self.end: int | None = None
        self.bad = False
        self.started = depth > 0

    def advance(self, text: str) -> None:
        i = self.pos
        while i < len(text) and self.end is None and not self.bad:
            c = text[i]
            i += 1
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif c == "\\":
                    self.esc = True
                elif c == '"':
                    self.in_str = False
                    if not self.stack:
                        self.end = i
            elif not self.started:
                if c in WS:
                    continue
                self.started = True
                if c == '"':
                    self.in_str = True
                elif c in "{[":
                    self.stack.append(c)
                else:
                    self.bad = True
            elif c == '"':
                self.in_str = True
            elif c in "{[":
                self.stack.append(c)
            elif c in "}]":
                if not self.stack or self.stack.pop() != ("{" if c == "}" else "["):
                    self.bad = True
                elif not self.stack:
                    self.end = i
        self.pos = i


def unescape_json_string(s: str) -> str:
    """The text of a JSON string body (what is between its quotes); undecodable input as is."""
    try:
        return json.loads(f'"{s}"')
    except ValueError:
        return s
