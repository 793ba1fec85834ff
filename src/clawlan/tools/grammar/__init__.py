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

The modules, in the order a schema flows through them: ``keywords`` (what each
JSON Schema keyword means here), ``schema`` (the walk into rules), ``regex``
(``pattern`` to GBNF), ``gbnf`` (building blocks), ``limits`` (errors and
bounds), ``response`` (structured output) and ``tool_calls`` (call syntaxes).
"""

from clawlan.tools.grammar.limits import GrammarLimits, SchemaLimitExceeded, UnsupportedSchemaFeature
from clawlan.tools.grammar.response import json_object_grammar, response_format_grammar, schema_to_gbnf
from clawlan.tools.grammar.schema import _Builder  # noqa: F401  (tests count its calls)
from clawlan.tools.grammar.tool_calls import (
    FAMILIES,
    MAX_PARALLEL_CALLS,
    selected_tools,
    tool_call_grammar,
    tool_call_triggers,
)

__all__ = [
    "FAMILIES",
    "MAX_PARALLEL_CALLS",
    "GrammarLimits",
    "SchemaLimitExceeded",
    "UnsupportedSchemaFeature",
    "json_object_grammar",
    "response_format_grammar",
    "schema_to_gbnf",
    "selected_tools",
    "tool_call_grammar",
    "tool_call_triggers",
]
