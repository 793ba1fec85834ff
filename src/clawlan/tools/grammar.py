"""JSON Schema to GBNF, for llama.cpp's grammar sampler.

The grammar constrains decoding so that whatever the model writes parses as
JSON and validates against the schema. Two rules keep that promise honest:

* The language of a generated grammar may be a *subset* of the schema's (a
  declared-order object, no unrequested extra keys, a bounded number of
  whitespace characters): every output is still valid, and a small model has
  fewer ways to wander off.
* A constraint the grammar cannot express is never dropped. It raises
  :class:`UnsupportedSchemaFeature`, a 400 that names the tool and the
  feature, so the caller learns about it instead of receiving invalid output.

Public entry points: :func:`schema_to_gbnf`, :func:`json_object_grammar`,
:func:`response_format_grammar` and :func:`tool_call_grammar`. Every grammar's
start rule is ``root``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clawlan.errors import InvalidRequest

__all__ = [
    "FAMILIES",
    "MAX_PARALLEL_CALLS",
    "GrammarLimits",
    "SchemaLimitExceeded",
    "UnsupportedSchemaFeature",
    "json_object_grammar",
    "response_format_grammar",
    "schema_to_gbnf",
    "tool_call_grammar",
    "tool_call_triggers",
]

# Template families whose tool-call syntax we can write and read. Aliases map
# onto the syntax they share (Qwen 2.5+ and NousResearch Hermes use ChatML).
FAMILIES = {
    "gemma": "gemma",
    "chatml": "hermes",
    "hermes": "hermes",
    "qwen": "hermes",
    "llama3": "llama3",
    "mistral": "mistral",
}

# A grammar that lets the model emit calls forever would let a small model
# loop until max_tokens; 16 calls in one turn is far above what agents use.
MAX_PARALLEL_CALLS = 16

# Keywords that only describe (never restrict) a value, so ignoring them is
# correct. Unknown keywords are ignored too, as JSON Schema validators do.
_ANNOTATIONS = {
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "example",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
    "markdownDescription",
    "x-order",
}

# Assertions we cannot guarantee with a context-free grammar (or have not
# written yet). Meeting one is a 400, never a silent drop.
_UNSUPPORTED = {
    "not",
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "unevaluatedProperties",
    "unevaluatedItems",
    "propertyNames",
    "contains",
    "minContains",
    "maxContains",
    "multipleOf",
    "$dynamicRef",
    "$recursiveRef",
}

# Formats the grammar enforces. Any other `format` is an annotation, which is
# what JSON Schema 2020-12 makes it by default (documented in docs/tools.md).
_FORMATS = {
    "date": r'[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] )',
    "time": r'( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{1,6} )? '
    r'( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )',
    "uuid": r'[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}',
}
_FORMATS["date-time"] = f'{_FORMATS["date"]} "T" {_FORMATS["time"]}'

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


class UnsupportedSchemaFeature(InvalidRequest):
    """A JSON Schema feature that grammar-constrained decoding cannot enforce.

    Raised instead of silently dropping the constraint; the server answers it
    as an HTTP 400 whose message names the tool (or ``response_format``), the
    feature and where in the schema it sits.
    """

    def __init__(self, owner: str, feature: str, where: str = "", *, param: str | None = None) -> None:
        at = f" at {where}" if where else ""
        super().__init__(
            f"{owner}: JSON Schema feature {feature!r}{at} cannot be enforced by grammar-constrained "
            "decoding; remove it or describe the constraint in the description instead",
            param=param,
        )
        self.owner = owner
        self.feature = feature
        self.where = where


class SchemaLimitExceeded(InvalidRequest):
    """A schema past one of the server's limits (depth, grammar size, build time): a 400 naming it."""

    code = "schema_too_large"


@dataclass(frozen=True)
class GrammarLimits:
    """Bounds on one request's grammar build; each names the config key a refusal points at.

    The build is linear in the schema (each subschema is walked once and its
    rule reused), so these bound honest work rather than an explosion: a
    schema nested past ``max_depth`` subschemas, a grammar over
    ``max_grammar_bytes``, or a build still running at ``deadline``
    (``time.monotonic()``) is refused.
    """

    max_depth: int = 16
    max_grammar_bytes: int = 1 << 20
    deadline: float | None = None
    depth_key: str = "server.max_schema_depth"
    size_key: str = "server.max_grammar_bytes"
    time_key: str = "server.grammar_timeout_ms"


_REPEAT = re.compile(r"\{([0-9]+)(?:,([0-9]*))?\}")
# What a malformed schema (a string where a number belongs, NaN, a list for a mapping) raises
# in the walk; at the entry points it becomes a 400 instead of a 500.
_MALFORMED = (TypeError, ValueError, OverflowError, AttributeError, KeyError, IndexError, RecursionError)


def _malformed(owner: str, param: str | None, exc: Exception) -> InvalidRequest:
    return InvalidRequest(f"{owner}: the JSON Schema is malformed ({type(exc).__name__}: {str(exc)[:160]})", param=param)


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


class _Builder:
    """Accumulates named rules; identical bodies share one rule."""

    def __init__(self, owner: str, root_schema: Any, param: str | None, limits: GrammarLimits | None = None) -> None:
        self.owner = owner
        self.root_schema = root_schema
        self.param = param
        self.limits = limits or GrammarLimits()
        self.rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self._refs: dict[str, str] = {}
        # id(subschema) -> (subschema, expression): a subschema reached twice (a `type` list, an
        # anyOf with siblings, a $ref with siblings) is walked once. The schema is kept so its id
        # cannot be reused by a new object.
        self._memo: dict[int, tuple[Any, str]] = {}
        self._depth = 0
        self._size = 0

    def new_schema(self, owner: str, root_schema: Any) -> None:
        """Start on another schema (the next tool): its $refs and subschemas are its own."""
        self.owner = owner
        self.root_schema = root_schema
        self._refs = {}
        self._memo = {}

    # -- rule bookkeeping -------------------------------------------------
    def fail(self, feature: str, where: str) -> UnsupportedSchemaFeature:
        return UnsupportedSchemaFeature(self.owner, feature, where, param=self.param)

    def limit(self, what: str, key: str, value: Any) -> SchemaLimitExceeded:
        return SchemaLimitExceeded(
            f"{self.owner}: {what} ({key} = {value}); simplify the schema, or raise {key} in the server's config",
            param=self.param,
        )

    def _grow(self, n: int) -> None:
        self._size += n
        if self._size > self.limits.max_grammar_bytes:
            raise self.limit("the grammar for this schema is too large", self.limits.size_key, self.limits.max_grammar_bytes)

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self._grow(len(_PRIMITIVES[name]) + len(name) + 6)
            self.rules[name] = _PRIMITIVES[name]
            for dep in _PRIMITIVE_DEPS.get(name, ()):
                self.primitive(dep)
        return name

    def _fresh(self, hint: str) -> str:
        # The tail of the hint (nested hints grow with depth; names stay short, the grammar linear).
        base = re.sub(r"[^a-zA-Z0-9]+", "-", hint[-40:]).strip("-").lower() or "r"
        if base in _PRIMITIVES or base == "root":
            base += "-x"
        name, n = base, 1
        while name in self.rules:
            n += 1
            name = f"{base}-{n}"
        return name

    def add(self, hint: str, body: str) -> str:
        """Name ``body`` (reusing the rule if the same body exists)."""
        if body in self._by_body:
            return self._by_body[body]
        name = self._fresh(hint)
        self._grow(len(name) + len(body) + 6)
        for m in _REPEAT.finditer(body):
            # llama.cpp expands x{m,n} into n copies when it parses the grammar (on the engine
            # thread): count them, so maxLength: 1e9 is refused here rather than expanded there.
            self._grow(8 * max(int(g) for g in m.groups() if g))
        self.rules[name] = body
        self._by_body[body] = name
        return name

    def render(self, root_body: str) -> str:
        lines = [f"root ::= {root_body}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"

    # -- schema walking ---------------------------------------------------
    def resolve_ref(self, ref: str, where: str) -> tuple[str, Any]:
        if not ref.startswith("#"):
            raise self.fail(f"$ref to {ref!r} (only local #/$defs/... references)", where)
        node: Any = self.root_schema
        for part in filter(None, ref[1:].split("/")):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise self.fail(f"$ref to {ref!r} (not found)", where)
        return ref, node

    def visit(self, schema: Any, where: str, hint: str) -> str:
        """A GBNF expression (usually a rule name) for values of ``schema``, each subschema walked once."""
        seen = self._memo.get(id(schema))
        if seen is not None and seen[0] is schema:
            return seen[1]
        lim = self.limits
        if self._depth >= lim.max_depth:
            raise self.limit(f"the schema nests more than {lim.max_depth} levels at {where}", lim.depth_key, lim.max_depth)
        if lim.deadline is not None and time.monotonic() > lim.deadline:
            raise self.limit("building the grammar took too long", lim.time_key, "its budget")
        self._depth += 1
        try:
            expr = self._visit(schema, where, hint)
        finally:
            self._depth -= 1
        if isinstance(schema, Mapping):
            self._memo[id(schema)] = (schema, expr)
        return expr

    def _visit(self, schema: Any, where: str, hint: str) -> str:
        if schema is True or schema == {}:
            return self.primitive("value")
        if schema is False:
            raise self.fail("false (no value allowed)", where)
        if not isinstance(schema, Mapping):
            raise self.fail(f"schema of type {type(schema).__name__}", where)

        if "$ref" in schema:
            ref = schema["$ref"]
            rest = {k: v for k, v in schema.items() if k != "$ref" and k not in _ANNOTATIONS}
            if rest:
                # Siblings of $ref also apply (2019-09+): merge them in.
                _, target = self.resolve_ref(ref, where)
                return self.visit(self.merge(target, rest, where), where, hint)
            if ref not in self._refs:
                key, target = self.resolve_ref(ref, where)
                # Reserve the name first so recursive schemas refer to it.
                name = self._fresh("ref-" + ref.rsplit("/", 1)[-1])
                self._refs[ref] = name
                self.rules[name] = "null"  # placeholder, replaced below
                self.rules[name] = self.visit(target, ref, name)
            return self._refs[ref]

        for key in schema:
            if key in _UNSUPPORTED:
                raise self.fail(key, where)

        if "allOf" in schema:
            merged: Any = {k: v for k, v in schema.items() if k != "allOf"}
            for i, part in enumerate(schema["allOf"]):
                if isinstance(part, Mapping) and "$ref" in part:
                    part = self.resolve_ref(part["$ref"], f"{where}/allOf/{i}")[1]
                merged = self.merge(merged, part, f"{where}/allOf/{i}")
            return self.visit(merged, where, hint)

        if "anyOf" in schema and "oneOf" in schema:
            raise self.fail("anyOf together with oneOf", where)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                siblings = {k: v for k, v in rest.items() if k not in _ANNOTATIONS}
                alts = []
                for i, branch in enumerate(schema[key]):
                    sub = f"{where}/{key}/{i}"
                    if siblings:
                        # Shared keywords beside anyOf apply to every branch.
                        if isinstance(branch, Mapping) and "$ref" in branch:
                            branch = self.resolve_ref(branch["$ref"], sub)[1]
                        branch = self.merge(rest, branch, sub)
                    alts.append(self.visit(branch, sub, f"{hint}-{i}"))
                if not alts:
                    raise self.fail(f"empty {key}", where)
                return self.add(hint, " | ".join(dict.fromkeys(alts)))

        if "const" in schema:
            return _json_literal(schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not values:
                raise self.fail("empty enum", where)
            return self.add(hint, " | ".join(dict.fromkeys(_json_literal(v) for v in values)))

        types = schema.get("type")
        if isinstance(types, list):
            if not types:
                raise self.fail("empty type list", where)
            # Same level, one type each; their subschemas are shared objects, walked once (memo).
            alts = [self._visit({**schema, "type": t}, where, f"{hint}-{t}") for t in types]
            return self.add(hint, " | ".join(dict.fromkeys(alts)))
        if schema.get("nullable") is True and types != "null":
            # OpenAPI's nullable, which some tool schemas still carry.
            inner = self._visit({k: v for k, v in schema.items() if k != "nullable"}, where, hint)
            return self.add(hint + "-or-null", f"{inner} | {self.primitive('null')}")
        if types is None:
            types = _infer_type(schema)
            if types is None:
                return self.primitive("value")

        if types == "object":
            return self.visit_object(schema, where, hint)
        if types == "array":
            return self.visit_array(schema, where, hint)
        if types == "string":
            return self.visit_string(schema, where, hint)
        if types in ("integer", "number"):
            return self.visit_number(schema, types, where, hint)
        if types == "boolean":
            return self.primitive("boolean")
        if types == "null":
            return self.primitive("null")
        raise self.fail(f"type {types!r}", where)

    def merge(self, a: Any, b: Any, where: str) -> dict:
        """allOf of two schemas as one schema, where that is exact."""
        if a is True or a == {}:
            a = {}
        if b is True or b == {}:
            return dict(a)
        if not isinstance(a, Mapping) or not isinstance(b, Mapping):
            raise self.fail("allOf with a boolean schema", where)
        out = dict(a)
        for key, value in b.items():
            if key in _ANNOTATIONS or key not in out:
                out.setdefault(key, value)
            elif key == "properties":
                props = dict(out[key])
                for name, sub in value.items():
                    props[name] = (
                        self.merge(props[name], sub, f"{where}/properties/{name}") if name in props else sub
                    )
                out[key] = props
            elif key == "required":
                out[key] = list(dict.fromkeys([*out[key], *value]))
            elif key == "type":
                left = out[key] if isinstance(out[key], list) else [out[key]]
                right = value if isinstance(value, list) else [value]
                both = [t for t in left if t in right or (t == "integer" and "number" in right)]
                both += [t for t in right if t == "integer" and "number" in left and t not in both]
                if not both:
                    raise self.fail("allOf with disjoint types", where)
                out[key] = both[0] if len(both) == 1 else both
            elif out[key] != value:
                raise self.fail(f"allOf with two different {key!r}", where)
        return out

    def visit_object(self, schema: Mapping, where: str, hint: str) -> str:
        props: dict[str, Any] = dict(schema.get("properties") or {})
        required = list(schema.get("required") or [])
        additional = schema.get("additionalProperties")
        patterns: Mapping[str, Any] = schema.get("patternProperties") or {}
        for name in required:
            if name not in props:
                if additional is False and not patterns:
                    raise self.fail(
                        f"required property {name!r} that additionalProperties: false forbids", where
                    )
                # A required key with no declared schema takes additionalProperties'.
                props[name] = additional if isinstance(additional, Mapping) else {}
        ws = self.primitive("ws")

        # Extra key/value pairs: pattern-keyed ones, plus additionalProperties
        # when it is a schema, or when the object declares no properties at all
        # (a free-form map). With declared properties, an absent or `true`
        # additionalProperties generates no extra keys: a valid subset that
        # keeps small models from inventing arguments.
        extra_alts = []
        for i, (pattern, sub) in enumerate(patterns.items()):
            key = self.add(
                f"{hint}-pkey-{i}", '"\\"" ' + self.regex(pattern, f"{where}/patternProperties") + ' "\\""'
            )
            val = self.visit(sub, f"{where}/patternProperties/{pattern}", f"{hint}-pval-{i}")
            extra_alts.append(f'{key} {ws} ":" {ws} {val}')
        if additional is False:
            pass
        elif (isinstance(additional, Mapping) and additional != {}) or (
            "properties" not in schema and not patterns
        ):
            val = self.visit(
                additional if additional is not None else True,
                f"{where}/additionalProperties",
                f"{hint}-aval",
            )
            key = self.key_excluding(list(props), hint)
            extra_alts.append(f'{key} {ws} ":" {ws} {val}')
        extra = self.add(f"{hint}-extra", " | ".join(extra_alts)) if extra_alts else None

        lo = int(schema.get("minProperties", 0))
        hi = schema.get("maxProperties")
        names = list(props)
        sep = f'{ws} "," {ws}'
        if names:
            if lo > len([n for n in names if n in required]):
                raise self.fail("minProperties above the number of required properties", where)
            if hi is not None and (int(hi) < len(names) or extra):
                raise self.fail("maxProperties below the number of possible properties", where)
            kv = []
            for name in names:
                value = self.visit(props[name], f"{where}/properties/{name}", f"{hint}-{name}")
                kv.append(self.add(f"{hint}-{name}-kv", f'{_json_literal(name)} {ws} ":" {ws} {value}'))
            req = [n in required for n in names]
            # Linear in the number of properties (llama.cpp's converter does the same): rest[i]
            # is what may follow once something is written, from property i on (each optional
            # one skippable, extras last); first[i] is how the content may start at property i.
            # Properties keep their declared order.
            rest = self.add(f"{hint}-rest-{len(names)}", f"( {sep} {extra} )*") if extra else ""
            first = f"{extra} ( {sep} {extra} )*" if extra else ""
            for i in range(len(names) - 1, -1, -1):
                written = f"{kv[i]} {rest}".strip()
                first = self.add(f"{hint}-first-{i}", written if req[i] or not first else f"{written} | {first}")
                body = f"{sep} {kv[i]} {rest}" if req[i] else f"( {sep} {kv[i]} )? {rest}"
                rest = self.add(f"{hint}-rest-{i}", body.strip())
            all_optional = not any(req)
            content = first
            if all_optional:
                content += "?"
        elif extra:
            hi_n = None if hi is None else int(hi)
            if hi_n == 0:
                content = ""
            else:
                more = _repeat(f"( {sep} {extra} )", max(lo - 1, 0), None if hi_n is None else hi_n - 1)
                content = f"( {extra} {more} )" + ("" if lo > 0 else "?")
        else:
            if lo > 0:
                raise self.fail("minProperties on an object that allows no properties", where)
            content = ""
        return self.add(hint, _enclose('"{"', '"}"', content, ws))

    def key_excluding(self, names: list[str], hint: str) -> str:
        """A JSON string rule for any key except the declared ``names``.

        An extra key equal to a declared one would make a duplicate key whose
        value follows the wrong schema; the complement of a finite set of
        strings is a small trie, so exclude them exactly.
        """
        if not names:
            return self.primitive("string")
        char = self.primitive("char")
        encoded = [json.dumps(n, ensure_ascii=False)[1:-1] for n in names]

        def node(prefix: str) -> str:
            # Strings that start with `prefix` (already written) and are not in the set.
            nexts = sorted({e[len(prefix)] for e in encoded if e.startswith(prefix) and len(e) > len(prefix)})
            alts = []
            if prefix not in encoded:
                alts.append('"\\""')  # may end here
            excluded = _class_items([(ord(c), ord(c)) for c in nexts])
            alts.append(
                f'( [^{excluded}\\x22\\x5C\\x7F\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" [0-9a-fA-F]{{4}} ) ) {char}* "\\""'
            )
            for c in nexts:
                alts.append(f"{gbnf_literal(c)} {node(prefix + c)}")
            return self.add(f"{hint}-key", " | ".join(alts))

        return self.add(f"{hint}-key", f'"\\"" {node("")}')

    def visit_array(self, schema: Mapping, where: str, hint: str) -> str:
        if schema.get("uniqueItems") is True:
            raise self.fail("uniqueItems", where)
        items = schema.get("items", True)
        if isinstance(items, list):
            raise self.fail("items as a list (use prefixItems)", where)
        prefix = list(schema.get("prefixItems") or [])
        lo = int(schema.get("minItems", 0))
        hi = schema.get("maxItems")
        hi_n = None if hi is None else int(hi)
        ws = self.primitive("ws")
        sep = f'{ws} "," {ws}'
        if prefix:
            # Only the tuple itself is written (extra items are allowed but
            # never needed), so a schema for them or bounds past it are refused.
            if (
                items not in (False, True, {})
                or lo > len(prefix)
                or (hi_n is not None and hi_n < len(prefix))
            ):
                raise self.fail(
                    "prefixItems with an items schema, or minItems/maxItems outside the tuple", where
                )
            parts = [self.visit(s, f"{where}/prefixItems/{i}", f"{hint}-{i}") for i, s in enumerate(prefix)]
            # Tuple items are optional from the end: [], [a], [a, b], ...
            body = ""
            for i in range(len(parts) - 1, -1, -1):
                lead = "" if i == 0 else f"{sep} "
                body = f"( {lead}{parts[i]} {body} )" + ("?" if i >= lo else "")
            return self.add(hint, _enclose('"["', '"]"', body, ws))
        if items is False or hi_n == 0:
            if lo > 0:
                raise self.fail("minItems with no items allowed", where)
            return self.add(hint, f'"[" {ws} "]"')
        item = self.visit(items, f"{where}/items", f"{hint}-item")
        more = _repeat(f"( {sep} {item} )", max(lo - 1, 0), None if hi_n is None else hi_n - 1)
        content = f"( {item} {more} )" + ("" if lo > 0 else "?")
        return self.add(hint, _enclose('"["', '"]"', content, ws))

    def visit_string(self, schema: Mapping, where: str, hint: str) -> str:
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        hi_n = None if hi is None else int(hi)
        if hi_n is not None and hi_n < lo:
            raise self.fail("maxLength below minLength", where)
        if "pattern" in schema:
            if lo or hi_n is not None:
                raise self.fail("pattern together with minLength/maxLength", where)
            return self.add(hint, '"\\"" ' + self.regex(schema["pattern"], f"{where}/pattern") + ' "\\""')
        fmt = schema.get("format")
        if fmt in _FORMATS:
            if lo or hi_n is not None:
                raise self.fail(f"format {fmt!r} together with minLength/maxLength", where)
            return self.add(f"{hint}-{fmt}", f'"\\"" {_FORMATS[fmt]} "\\""')
        if lo == 0 and hi_n is None:
            return self.primitive("string")
        return self.add(hint, f'"\\"" {_repeat(self.primitive("char"), lo, hi_n) or ""} "\\""')

    def visit_number(self, schema: Mapping, kind: str, where: str, hint: str) -> str:
        lo, hi = _bounds(schema)
        if lo is None and hi is None:
            return self.primitive(kind)
        # Integers in [a, b] (exclusive bounds step inwards), and for numbers
        # the values strictly between two integers m and m+1 that both lie in
        # [ceil(min), floor(max)]. Non-integral bounds thus round inwards: a
        # valid subset. A fraction never ends in 0, so "0.000" cannot sneak
        # past an exclusive 0.
        a = None if lo is None else _step(lo[0], lo[1], up=True)
        b = None if hi is None else _step(hi[0], hi[1], up=False)
        alts = []
        if a is None or b is None or a <= b:
            if b is None or b >= 0:
                alts.append(_uint_range(max(a or 0, 0), b))
            if a is None or a < 0:
                alts.append(
                    '"-" ' + _group(_uint_range(1 if b is None else max(1, -b), None if a is None else -a))
                )
        if kind == "number":
            frac = '"." [0-9]{0,15} [1-9]'
            fa = None if lo is None else math.ceil(lo[0])
            fb = None if hi is None else math.floor(hi[0])
            # x in (m, m+1), m >= 0: needs fa <= m and m + 1 <= fb.
            m_lo, m_hi = max(0, fa or 0), None if fb is None else fb - 1
            if m_hi is None or m_hi >= m_lo:
                alts.append(f"{_group(_uint_range(m_lo, m_hi))} {frac}")
            # x in (-(m+1), -m), m >= 0: needs fa <= -(m+1) and -m <= fb.
            m_lo, m_hi = max(0, 0 if fb is None else -fb), None if fa is None else -fa - 1
            if m_hi is None or m_hi >= m_lo:
                alts.append(f'"-" {_group(_uint_range(m_lo, m_hi))} {frac}')
        if not alts:
            raise self.fail("a minimum/maximum range with no value the grammar can write", where)
        return self.add(f"{hint}-{kind}", " | ".join(_group(x) for x in alts))

    # -- regular expressions ---------------------------------------------
    def regex(self, pattern: str, where: str) -> str:
        """The body of a JSON string (without quotes) whose value matches ``pattern``."""
        try:
            return _Regex(pattern, self.primitive("char")).translate()
        except _RegexUnsupported as exc:
            raise self.fail(f"pattern {pattern!r} ({exc})", where) from None


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


def _bounds(schema: Mapping) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """(value, exclusive) for the lower and upper bound, across draft 4 and 2020-12."""
    lo = hi = None
    if "minimum" in schema:
        lo = (schema["minimum"], schema.get("exclusiveMinimum") is True)
    if "maximum" in schema:
        hi = (schema["maximum"], schema.get("exclusiveMaximum") is True)
    ex_lo, ex_hi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(ex_lo, int | float) and not isinstance(ex_lo, bool) and (lo is None or ex_lo >= lo[0]):
        lo = (ex_lo, True)
    if isinstance(ex_hi, int | float) and not isinstance(ex_hi, bool) and (hi is None or ex_hi <= hi[0]):
        hi = (ex_hi, True)
    return lo, hi


def _step(bound: float, exclusive: bool, *, up: bool) -> int:
    """The nearest integer inside a bound (``up``: a lower bound)."""
    if float(bound).is_integer():
        return int(bound) + (1 if up else -1) * int(exclusive)
    return math.ceil(bound) if up else math.floor(bound)


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


def _infer_type(schema: Mapping) -> str | None:
    keys = set(schema)
    if keys & {
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
    }:
        return "object"
    if keys & {"items", "prefixItems", "minItems", "maxItems", "uniqueItems"}:
        return "array"
    if keys & {"minLength", "maxLength", "pattern", "format"}:
        return "string"
    if keys & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        return "number"
    return None


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


def schema_to_gbnf(
    schema: Any, *, owner: str = "response_format", param: str | None = None, limits: GrammarLimits | None = None
) -> str:
    """GBNF (start rule ``root``) for JSON values valid against ``schema``.

    ``owner`` names the schema in errors ("tool 'exec'", "response_format").
    Raises :class:`UnsupportedSchemaFeature` for anything it cannot enforce.
    """
    b = _Builder(owner, schema, param, limits)
    try:
        root = b.visit(schema, "#", "v")
    except _MALFORMED as exc:
        raise _malformed(owner, param, exc) from None
    return b.render(root)


def json_object_grammar() -> str:
    """Any JSON object: ``response_format: {"type": "json_object"}``."""
    b = _Builder("response_format", {}, "response_format")
    return b.render(b.visit({"type": "object"}, "#", "v"))


def response_format_grammar(
    response_format: Mapping[str, Any] | None, limits: GrammarLimits | None = None
) -> str | None:
    """The grammar for an OpenAI ``response_format``, or None for plain text.

    ``json_schema`` is always enforced, ``strict`` or not: with a grammar
    sampler at hand, honouring the schema costs nothing and never hurts.
    """
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return json_object_grammar()
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping) or "schema" not in spec:
            raise InvalidRequest("response_format.json_schema.schema is required", param="response_format")
        name = spec.get("name") or "schema"
        return schema_to_gbnf(spec["schema"], owner=f"response_format {name!r}", param="response_format", limits=limits)
    raise InvalidRequest(f"unknown response_format type {kind!r}", param="response_format")


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), Mapping):
        raise InvalidRequest("each tool must be {type: 'function', function: {...}}", param="tools")
    fn = tool["function"]
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise InvalidRequest("each tool function needs a name", param="tools")
    return fn


def selected_tools(tools: Sequence[Mapping[str, Any]], tool_choice: Any) -> list[Mapping[str, Any]]:
    """The tools a ``tool_choice`` allows (all for auto/required, one when named)."""
    fns = [_function(t) for t in tools]
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [f for f in fns if f["name"] == name]
        if not chosen:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
        return chosen
    return fns


def tool_call_grammar(
    tools: Sequence[Mapping[str, Any]],
    family: str,
    *,
    tool_choice: Any = "required",
    parallel: bool = True,
    limits: GrammarLimits | None = None,
) -> str:
    """GBNF that makes the model write tool calls in ``family``'s syntax.

    ``tools`` are OpenAI tool objects. ``tool_choice`` is ``"required"`` (any
    of the tools) or ``{"type": "function", "function": {"name": ...}}``.
    With ``parallel``, 1 to :data:`MAX_PARALLEL_CALLS` calls; else exactly
    one (a named function is always exactly one, as OpenAI does).
    """
    syntax = FAMILIES.get(family)
    if syntax is None:
        raise InvalidRequest(f"no tool-call syntax for template family {family!r}", param="tools")
    fns = selected_tools(tools, tool_choice)
    if not fns:
        raise InvalidRequest("tool_choice requires at least one tool", param="tools")
    if isinstance(tool_choice, Mapping):
        parallel = False
    b = _Builder("tools", None, "tools", limits)
    ws = b.primitive("ws")
    args_key = "parameters" if syntax == "llama3" else "arguments"
    calls = []
    for fn in fns:
        name = fn["name"]
        # No parameters means a function that takes none: arguments are {}.
        schema = fn.get("parameters") or {"type": "object", "properties": {}, "additionalProperties": False}
        b.new_schema(f"tool {name!r}", schema)  # each tool's $refs point into its own schema
        try:
            args = b.visit(schema, "#", f"{name}-args")
        except _MALFORMED as exc:
            raise _malformed(b.owner, "tools", exc) from None
        calls.append(
            b.add(
                f"call-{name}",
                f'"{{" {ws} "\\"name\\"" {ws} ":" {ws} {_json_literal(name)} {ws} "," {ws} '
                f'"\\"{args_key}\\"" {ws} ":" {ws} {args} {ws} "}}"',
            )
        )
    call = b.add("call", " | ".join(calls))
    more = MAX_PARALLEL_CALLS - 1 if parallel else 0
    if syntax == "hermes":
        one = b.add("tool-call", f'"<tool_call>\\n" {call} "\\n</tool_call>"')
        root = f'{one} ( "\\n" {one} ){{0,{more}}}' if more else one
    elif syntax == "gemma":
        one = b.add("tool-call", f'"```tool_call\\n" {call} "\\n```"')
        root = f'{one} ( "\\n" {one} ){{0,{more}}}' if more else one
    elif syntax == "llama3":
        root = f'{call} ( ";" {ws} {call} ){{0,{more}}}' if more else call
    else:  # mistral
        root = (
            f'"[TOOL_CALLS][" {call} ( "," {ws} {call} ){{0,{more}}} "]"'
            if more
            else f'"[TOOL_CALLS][" {call} "]"'
        )
    return b.render(root)


def tool_call_triggers(family: str) -> list[str]:
    """Trigger patterns for a *lazy* tool-call grammar (``tool_choice: "auto"``).

    For ``llama_sampler_init_grammar_lazy_patterns``: the sampler leaves the
    model free until the text generated so far fully matches one pattern,
    then constrains from the pattern's first group on with
    :func:`tool_call_grammar`'s grammar. A call the model chooses to make is
    then schema-valid too, while a plain answer stays unconstrained.
    """
    syntax = FAMILIES.get(family)
    if syntax is None:
        raise InvalidRequest(f"no tool-call syntax for template family {family!r}", param="tools")
    anywhere = r"[\s\S]*?({})[\s\S]*"
    if syntax == "hermes":
        return [anywhere.format(re.escape("<tool_call>"))]
    if syntax == "gemma":
        return [anywhere.format(re.escape("```tool_call"))]
    if syntax == "mistral":
        return [anywhere.format(re.escape("[TOOL_CALLS]"))]
    # Llama 3: a JSON call object as the whole message, or after <|python_tag|>.
    return [r'\s*(\{)\s*"name"[\s\S]*', r"[\s\S]*?<\|python_tag\|>\s*(\{)[\s\S]*"]
