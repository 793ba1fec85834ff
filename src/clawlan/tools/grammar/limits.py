"""The errors a schema turns into (400s that name the tool and feature) and the bounds on one
request's grammar build."""

from __future__ import annotations

from dataclasses import dataclass

from clawlan.errors import InvalidRequest


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


# What a malformed schema (a string where a number belongs, NaN, a list for a mapping) raises
# in the walk; at the entry points it becomes a 400 instead of a 500.
_MALFORMED = (TypeError, ValueError, OverflowError, AttributeError, KeyError, IndexError, RecursionError)


def _malformed(owner: str, param: str | None, exc: Exception) -> InvalidRequest:
    return InvalidRequest(f"{owner}: the JSON Schema is malformed ({type(exc).__name__}: {str(exc)[:160]})", param=param)
