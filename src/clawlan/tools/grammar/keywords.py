"""Which JSON Schema keywords the grammar enforces, ignores (annotations) or refuses, and how
numeric bounds and implied types are read across drafts."""

from __future__ import annotations

import math
from collections.abc import Mapping

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
