"""Turn a non-recursive GBNF grammar into a Python regex, to test its language.

llama.cpp has no "does this grammar accept this string" call, so membership
tests go through this translation instead: rules are inlined, and GBNF's
literals, classes, groups, alternation and repetition map one to one onto
``re`` syntax. A recursive rule (any JSON value, a ``$ref`` cycle) is
unrolled to a small depth, past which it matches nothing: enough for tests.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(
    r'\s+|#[^\n]*|(?P<lit>"(?:[^"\\]|\\.)*")|(?P<cls>\[(?:[^\]\\]|\\.)*\])|(?P<name>[a-zA-Z0-9-]+)'
    r"|(?P<rep>\{\d+(?:,\d*)?\}|[*+?])|(?P<op>[()|])"
)


def _unescape(body: str) -> str:
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        if e == "x":
            out.append(chr(int(body[i + 2 : i + 4], 16)))
            i += 4
        elif e == "u":
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        else:
            out.append({"n": "\n", "t": "\t", "r": "\r"}.get(e, e))
            i += 2
    return "".join(out)


def parse_rules(gbnf: str) -> dict[str, str]:
    rules: dict[str, str] = {}
    for line in gbnf.splitlines():
        if line.strip():
            name, body = line.split("::=", 1)
            rules[name.strip()] = body.strip()
    return rules


def gbnf_to_regex(gbnf: str, start: str = "root") -> re.Pattern[str]:
    rules = parse_rules(gbnf)
    cache: dict[str, str] = {}

    def expand(name: str, stack: tuple[str, ...]) -> str:
        if stack.count(name) >= 3:
            return "(?!)"
        if name in cache:
            return cache[name]
        text = "(?:" + translate(rules[name], (*stack, name)) + ")"
        if not any(r in stack for r in rules):  # only a top-level expansion is context-free to reuse
            cache[name] = text
        return text

    def translate(body: str, stack: tuple[str, ...]) -> str:
        out = []
        pos = 0
        while pos < len(body):
            m = _TOKEN.match(body, pos)
            if not m:
                raise ValueError(f"cannot read {body[pos:]!r}")
            pos = m.end()
            if m.group("lit"):
                out.append("(?:" + re.escape(_unescape(m.group("lit")[1:-1])) + ")")
            elif m.group("cls"):
                out.append(m.group("cls"))
            elif m.group("name"):
                out.append(expand(m.group("name"), stack))
            elif m.group("rep"):
                out.append(m.group("rep"))
            elif m.group("op"):
                out.append({"(": "(?:", ")": ")", "|": "|"}[m.group("op")])
        return "".join(out)

    return re.compile(expand(start, ()), re.DOTALL)


def accepts(gbnf: str, text: str) -> bool:
    return gbnf_to_regex(gbnf).fullmatch(text) is not None
