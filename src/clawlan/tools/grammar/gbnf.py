"""GBNF building blocks: the JSON primitives' rules, literals, repetition, and integer ranges."""

from __future__ import annotations

import json
import re
from typing import Any

# Whitespace between tokens: one space, or a newline and a bounded indent.
# Unbounded `[ \t\n]*` lets a small model emit whitespace until max_tokens.
_WS = r'( " " | "\n" [ \t]{0,16} )?'
# One character of a JSON string: anything but a quote, a backslash or a
# control character, or an escape sequence.
_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )'
# The subset of characters a regex-derived string uses: plain, unescaped ones.
_PLAIN = r'[^"\\\x7F\x00-\x1F]'

_PRIMITIVES = {
    "ws": _WS,
    "char": _CHAR,
    "string": r'"\"" char* "\""',
    "integer": r'"-"? ( "0" | [1-9] [0-9]{0,18} )',
    "number": r'"-"? ( "0" | [1-9] [0-9]{0,18} ) ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?',
    "boolean": r'"true" | "false"',
    "null": r'"null"',
    "value": "object | array | string | number | boolean | null",
    "object": r'"{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"',
    "array": r'"[" ws ( value ( ws "," ws value )* ws )? "]"',
}
_PRIMITIVE_DEPS = {
    "string": ["char"],
    "value": ["object", "array", "string", "number", "boolean", "null"],
    "object": ["ws", "string", "value"],
    "array": ["ws", "value"],
}


_REPEAT = re.compile(r"\{([0-9]+)(?:,([0-9]*))?\}")


def gbnf_literal(text: str) -> str:
    """A GBNF string literal matching ``text`` exactly."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_literal(value: Any) -> str:
    # Compact separators match what the schema-free parts of the grammar allow.
    return gbnf_literal(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))


def _repeat(item: str, lo: int, hi: int | None) -> str:
    """``item`` repeated lo..hi times (hi None: unbounded), in GBNF."""
    if hi is not None and hi == lo:
        return "" if lo == 0 else f"{item}{{{lo}}}"
    if hi is None:
        return {0: f"{item}*", 1: f"{item}+"}.get(lo, f"{item}{{{lo},}}")
    if lo == 0 and hi == 1:
        return f"{item}?"
    return f"{item}{{{lo},{hi}}}"


def _enclose(open_: str, close: str, content: str, ws: str) -> str:
    """Brackets around ``content`` with whitespace inside; an empty one gets a single ``ws``, not
    two in a row (a small model otherwise writes ``{\n    \n }``, tokens that buy nothing)."""
    if not content:
        return f"{open_} {ws} {close}"
    if content.endswith("?"):  # wholly optional content
        return f"{open_} {ws} ( {content[:-1]} {ws} )? {close}"
    return f"{open_} {ws} {content} {ws} {close}"


def _group(expr: str) -> str:
    return f"( {expr} )" if "|" in expr else expr


def _uint_range(lo: int, hi: int | None) -> str:
    """GBNF for decimal naturals in [lo, hi] (hi None: no upper bound), no leading zeros."""
    if hi is not None and lo > hi:
        raise ValueError("empty range")
    lo_s = str(lo)
    alts = []
    top = len(lo_s) if hi is None else len(str(hi))
    for width in range(len(lo_s), top + 1):
        a = lo_s if width == len(lo_s) else "1" + "0" * (width - 1)
        b = "9" * width if hi is None or width < len(str(hi)) else str(hi)
        alts.append(_same_width(a, b))
    if hi is None:
        # Every number with more digits than `lo` is above it.
        alts.append(f"[1-9] [0-9]{{{len(lo_s)},18}}")
    return " | ".join(alts)


def _same_width(a: str, b: str) -> str:
    """Digit strings s with a <= s <= b, all three of one width."""
    if a == b:
        return gbnf_literal(a)
    if len(a) == 1:
        return f"[{a}-{b}]"
    if a[0] == b[0]:
        return f"{gbnf_literal(a[0])} {_group(_same_width(a[1:], b[1:]))}"
    rest = len(a) - 1
    if a[1:] == "0" * rest and b[1:] == "9" * rest:
        return f"[{a[0]}-{b[0]}] [0-9]{{{rest}}}"
    alts = [f"{gbnf_literal(a[0])} {_group(_same_width(a[1:], '9' * rest))}"]
    if int(b[0]) - int(a[0]) > 1:
        alts.append(f"[{int(a[0]) + 1}-{int(b[0]) - 1}] [0-9]{{{rest}}}")
    alts.append(f"{gbnf_literal(b[0])} {_group(_same_width('0' * rest, b[1:]))}")
    return " | ".join(alts)
