"""The JSON Schema walk: each subschema once, into named GBNF rules (identical bodies share one)."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from clawlan.tools.grammar.gbnf import (
    _PRIMITIVE_DEPS,
    _PRIMITIVES,
    _REPEAT,
    _enclose,
    _group,
    _json_literal,
    _repeat,
    _uint_range,
    gbnf_literal,
)
from clawlan.tools.grammar.keywords import _ANNOTATIONS, _FORMATS, _UNSUPPORTED, _bounds, _infer_type, _step
from clawlan.tools.grammar.limits import GrammarLimits, SchemaLimitExceeded, UnsupportedSchemaFeature
from clawlan.tools.grammar.regex import _class_items, _Regex, _RegexUnsupported


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
