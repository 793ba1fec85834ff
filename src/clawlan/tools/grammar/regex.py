"""ECMA-style regex (``pattern``) to GBNF over JSON string content, or a clear refusal."""

from __future__ import annotations

import json
import re

from clawlan.tools.grammar.gbnf import _PLAIN, _repeat, gbnf_literal


class _RegexUnsupported(Exception):
    pass


class _Regex:
    """Translate an ECMA-style regex subset into GBNF over JSON string content.

    Supported: literals, escapes (\\d \\w \\s and escaped punctuation), ``.``,
    classes ``[...]``/``[^...]``, groups ``(...)``/``(?:...)``, alternation and
    the quantifiers ``* + ? {m} {m,} {m,n}`` (lazy forms too: same language).
    Characters the regex would allow but JSON must escape (quote, backslash,
    control characters) are left out, which yields a valid subset; ``\\s``
    is a plain space for the same reason.
    """

    def __init__(self, pattern: str, char_rule: str) -> None:
        self.p = pattern
        self.i = 0
        self.char = char_rule

    def translate(self) -> str:
        anchored_start = self.p.startswith("^")
        if anchored_start:
            self.i = 1
        body = self.alternation(top=True)
        anchored_end = self.i < len(self.p) and self.p[self.i] == "$"
        if anchored_end:
            self.i += 1
        if self.i != len(self.p):
            raise _RegexUnsupported(f"unexpected {self.p[self.i]!r} at {self.i}")
        # JSON Schema patterns are unanchored: a match anywhere is enough.
        parts = ([] if anchored_start else [f"{self.char}*"]) + [f"( {body} )" if body else ""]
        parts += [] if anchored_end else [f"{self.char}*"]
        return " ".join(p for p in parts if p) or '""'

    def alternation(self, top: bool = False) -> str:
        alts = [self.sequence()]
        while self.i < len(self.p) and self.p[self.i] == "|":
            self.i += 1
            alts.append(self.sequence())
        return " | ".join(a or '""' for a in alts)

    def sequence(self) -> str:
        items = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            if self.p[self.i] == "$":
                if self.i == len(self.p) - 1:
                    break
                raise _RegexUnsupported("$ before the end")
            atom = self.atom()
            items.append(self.quantifier(atom))
        return " ".join(items)

    def atom(self) -> str:
        c = self.p[self.i]
        self.i += 1
        if c == "(":
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self.p.startswith("?", self.i):
                raise _RegexUnsupported("lookaround or named group")
            inner = self.alternation()
            if self.i >= len(self.p) or self.p[self.i] != ")":
                raise _RegexUnsupported("unbalanced parenthesis")
            self.i += 1
            return f"( {inner} )"
        if c == "[":
            return self.char_class()
        if c == ".":
            return _PLAIN
        if c == "^":
            raise _RegexUnsupported("^ after the start")
        if c == "\\":
            return self.escape()
        if c in "*+?{":
            raise _RegexUnsupported(f"quantifier {c!r} with nothing to repeat")
        return _json_char(c)

    def escape(self) -> str:
        """An escape outside a class (the backslash is consumed)."""
        if self.i >= len(self.p):
            raise _RegexUnsupported("trailing backslash")
        c = self.p[self.i]
        self.i += 1
        if c in _SHORTHANDS:
            return _class_expr(_SHORTHANDS[c], negate=False)
        if c.lower() in _SHORTHANDS:
            return _class_expr(_SHORTHANDS[c.lower()], negate=True)
        if c in _CONTROL_ESCAPES:
            return _json_char(_CONTROL_ESCAPES[c])
        if c.isalnum():
            raise _RegexUnsupported(f"escape \\{c}")
        return _json_char(c)

    def char_class(self) -> str:
        negate = self.p.startswith("^", self.i)
        if negate:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        shorthands: set[str] = set()
        negated_shorthands: set[str] = set()
        first = True
        while self.i < len(self.p) and (self.p[self.i] != "]" or first):
            first = False
            c = self.p[self.i]
            self.i += 1
            if c == "\\":
                if self.i >= len(self.p):
                    raise _RegexUnsupported("unterminated class")
                e = self.p[self.i]
                self.i += 1
                if e in _SHORTHANDS:
                    shorthands.add(e)
                    ranges += _SHORTHANDS[e]
                    continue
                if e.lower() in _SHORTHANDS:
                    negated_shorthands.add(e.lower())
                    continue
                if e in _CONTROL_ESCAPES:
                    c = _CONTROL_ESCAPES[e]
                elif e.isalnum():
                    raise _RegexUnsupported(f"escape \\{e} in a class")
                else:
                    c = e
            lo = hi = ord(c)
            if self.p.startswith("-", self.i) and not self.p.startswith("-]", self.i):
                end = self.p[self.i + 1 : self.i + 2]
                self.i += 2
                if not end or end == "\\":
                    raise _RegexUnsupported("a range with an escaped or missing end")
                hi = ord(end)
                if hi < lo:
                    raise _RegexUnsupported("reversed range")
            ranges.append((lo, hi))
        if self.i >= len(self.p):
            raise _RegexUnsupported("unterminated class")
        self.i += 1
        if negated_shorthands:
            # Only the "any character" idioms [\s\S], [\d\D], [\w\W] are supported.
            if negate or not negated_shorthands <= shorthands:
                raise _RegexUnsupported("\\D, \\S or \\W inside a class")
            return _PLAIN
        return _class_expr(ranges, negate=negate)

    def quantifier(self, atom: str) -> str:
        if self.i >= len(self.p):
            return atom
        c = self.p[self.i]
        lo, hi = None, None
        if c in "*+?":
            self.i += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        elif c == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i :])
            if not m:
                raise _RegexUnsupported("bad {m,n}")
            self.i += m.end()
            lo = int(m.group(1))
            hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        else:
            return atom
        if self.p.startswith("?", self.i):
            self.i += 1  # lazy: same language
        elif self.p.startswith("+", self.i):
            raise _RegexUnsupported("possessive quantifier")
        return (
            _repeat(f"( {atom} )" if " " in atom.strip() and not atom.startswith("(") else atom, lo, hi)
            or '""'
        )


def _json_char(c: str) -> str:
    """A regex literal character as it appears inside a JSON string."""
    return gbnf_literal(json.dumps(c, ensure_ascii=False)[1:-1])


_SHORTHANDS = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": [(0x09, 0x0D), (0x20, 0x20)],
}
_CONTROL_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v"}
# Characters JSON writes escaped; regex classes leave them out (a valid subset).
_ESCAPED = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]


def _class_point(cp: int) -> str:
    c = chr(cp)
    if c.isascii() and c.isalnum():
        return c
    if cp <= 0xFF:
        return f"\\x{cp:02X}"
    return f"\\u{cp:04X}" if cp <= 0xFFFF else f"\\U{cp:08X}"


def _class_items(ranges: list[tuple[int, int]]) -> str:
    return "".join(
        _class_point(lo) if lo == hi else f"{_class_point(lo)}-{_class_point(hi)}" for lo, hi in ranges
    )


def _class_expr(ranges: list[tuple[int, int]], *, negate: bool) -> str:
    """A GBNF class over plain JSON string characters: ``ranges`` (or all but them)."""
    if negate:
        return f"[^{_class_items(ranges + _ESCAPED)}]"
    kept = []
    for lo, hi in ranges:
        pieces = [(lo, hi)]
        for flo, fhi in _ESCAPED:
            pieces = [
                part
                for plo, phi in pieces
                for part in ((plo, min(phi, flo - 1)), (max(plo, fhi + 1), phi))
                if part[0] <= part[1]
            ]
        kept += pieces
    if not kept:
        raise _RegexUnsupported("a class of only characters JSON must escape")
    return f"[{_class_items(kept)}]"
