"""Grammars for structured output: a JSON Schema, any JSON object, or an OpenAI ``response_format``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clawlan.errors import InvalidRequest
from clawlan.tools.grammar.limits import _MALFORMED, GrammarLimits, _malformed
from clawlan.tools.grammar.schema import _Builder


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
