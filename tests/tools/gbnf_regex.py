"""Turn a non-recursive GBNF grammar into a Python regex, to test its language.

llama.cpp has no "does this grammar accept this string" call, so membership
tests go through this translation instead: rules are inlined, and GBNF's
literals, classes, groups, alternation and repetition map one to one onto
``re`` syntax. A recursive rule (any JSON value, a ``$ref`` cycle) is
unrolled to a small depth, past which it matches nothing: enough for tests.
"""

from __future__ import annotations

import random
import re
from typing import Any

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


# -- random strings of a grammar's language ----------------------------------------

_POOL = [chr(c) for c in range(0x20, 0x7F)] + ["\n", "\t", "é", "日", "\x7f", "\x01"]


class _TooDeep(Exception):
    pass


def _parse_alt(toks: list[tuple[str, str]], i: int) -> tuple[Any, int]:
    alts = []
    seq, i = _parse_seq(toks, i)
    alts.append(seq)
    while i < len(toks) and toks[i] == ("op", "|"):
        seq, i = _parse_seq(toks, i + 1)
        alts.append(seq)
    return ("alt", alts), i


def _parse_seq(toks: list[tuple[str, str]], i: int) -> tuple[Any, int]:
    items = []
    while i < len(toks) and toks[i] not in (("op", "|"), ("op", ")")):
        kind, text = toks[i]
        if (kind, text) == ("op", "("):
            node, i = _parse_alt(toks, i + 1)
            i += 1  # ")"
        else:
            node, i = (kind, text), i + 1
        if i < len(toks) and toks[i][0] == "rep":
            rep = toks[i][1]
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(rep, (None, None))
            if lo is None:
                m = re.fullmatch(r"\{(\d+)(,(\d*))?\}", rep)
                assert m
                lo = int(m.group(1))
                hi = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
            node, i = ("rep", node, lo, hi), i + 1
        items.append(node)
    return ("seq", items), i


def _tokens(body: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        assert m, body[pos:]
        pos = m.end()
        for kind in ("lit", "cls", "name", "rep", "op"):
            if m.group(kind):
                out.append((kind, m.group(kind)))
    return out


def sample(gbnf: str, rng: random.Random, start: str = "root", max_depth: int = 40) -> str:
    """A random string the grammar accepts (retrying walks that recurse too deep)."""
    rules = {name: _parse_alt(_tokens(body), 0)[0] for name, body in parse_rules(gbnf).items()}

    def walk(node: Any, depth: int) -> str:
        if depth > max_depth:
            raise _TooDeep
        kind = node[0]
        if kind == "alt":
            return walk(rng.choice(node[1]), depth + 1)
        if kind == "seq":
            return "".join(walk(n, depth + 1) for n in node[1])
        if kind == "rep":
            _, inner, lo, hi = node
            n = rng.randint(lo, min(hi if hi is not None else lo + 3, lo + 3))
            return "".join(walk(inner, depth + 1) for _ in range(n))
        if kind == "lit":
            return _unescape(node[1][1:-1])
        if kind == "cls":
            cls = re.compile(node[1])
            choices = [c for c in _POOL if cls.fullmatch(c)]
            assert choices, node[1]
            return rng.choice(choices)
        return walk(rules[node[1]], depth + 1)

    for _ in range(200):
        try:
            return walk(rules[start], 0)
        except _TooDeep:
            continue
    raise AssertionError("could not sample a shallow string")
