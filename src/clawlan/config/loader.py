"""Merge config files, environment variables and flags into :class:`Settings`.

Precedence is flag > environment > file > default. Each value remembers its
source so ``clawlan config show`` can say where it came from. A wrong type or
an out-of-range value is a :class:`ConfigError` naming the file (or variable
or flag), the key, the value and what is allowed; an unknown key is a warning
that names it, because a typo should never be silently ignored.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import ValidationError

from clawlan.config.settings import SECTIONS, Section, Settings
from clawlan.errors import ConfigError

ENV_PREFIX = "CLAWLAN_"


@dataclass
class Loaded:
    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "_").upper()


def allowed(section: type[Section], key: str) -> str:
    """Describe what a field accepts, for error messages."""
    info = section.model_fields[key]
    ann = info.annotation
    if typing.get_origin(ann) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    lo = hi = None
    for m in info.metadata:
        if isinstance(m, annotated_types.Ge):
            lo = m.ge
        elif isinstance(m, annotated_types.Le):
            hi = m.le
    args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
    kind = " or ".join(getattr(a, "__name__", str(a)) for a in args)
    if lo is not None or hi is not None:
        return f"{kind} in {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
    return kind


def _validate(section_name: str, data: dict[str, Any], origin: Mapping[str, str], strict: bool) -> Section:
    cls = SECTIONS[section_name]
    try:
        return cls.model_validate(data, strict=strict)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        where = origin.get(key, "config")
        raise ConfigError(
            f"{where}: {section_name}.{key} = {json.dumps(err.get('input'), default=str)} is invalid "
            f"({err['msg']}); allowed: {allowed(cls, key)}"
        ) from None


def read_file(path: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Read one JSON config file; return its sections and warnings."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the path given to --config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror}); fix with: chmod 644 {path}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object with sections such as \"backend\"")
    out: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for name, body in data.items():
        if name not in SECTIONS:
            warnings.append(f"{path}: unknown section {name!r} ignored (known: {', '.join(SECTIONS)})")
            continue
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: section {name!r} must be a JSON object, not {json.dumps(body)}")
        known = SECTIONS[name].model_fields
        for key in body:
            if key not in known:
                warnings.append(f"{path}: unknown key {name}.{key} ignored")
        clean = {k: v for k, v in body.items() if k in known}
        origin = dict.fromkeys(clean, str(path))
        _validate(name, clean, origin, strict=True)  # wrong types in a file are errors, not coercions
        out[name] = clean
    return out, warnings


def _env_value(raw: str) -> Any:
    # Lists may be given as JSON arrays or comma-separated; scalars are coerced by pydantic.
    raw = raw.strip()
    if raw.startswith("["):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            pass
    return raw


def load_settings(
    files: Iterable[str | Path] = (),
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> Loaded:
    """Load settings. ``flags`` maps dotted keys (``server.batch_size``) to values; None means unset.

    ``flag_names`` maps a dotted key to the flag that set it (``--port``), for messages.
    """
    env = os.environ if env is None else env
    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    origin: dict[str, dict[str, str]] = {name: {} for name in SECTIONS}
    loaded = Loaded(settings=Settings())

    paths = [Path(p) for p in files]
    if not paths and env.get(ENV_PREFIX + "CONFIG"):
        paths = [Path(p) for p in env[ENV_PREFIX + "CONFIG"].split(os.pathsep) if p]
    for path in paths:
        sections, warnings = read_file(path)
        loaded.warnings.extend(warnings)
        for name, body in sections.items():
            merged[name].update(body)
            origin[name].update(dict.fromkeys(body, f"file {path}"))

    for name, cls in SECTIONS.items():
        for key, info in cls.model_fields.items():
            var = env_name(f"{name}.{key}")
            if var in env:
                value = _env_value(env[var])
                if typing.get_origin(info.annotation) is list and isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                merged[name][key] = value
                origin[name][key] = f"env {var}"

    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        name, key = dotted.split(".", 1)
        merged[name][key] = value
        origin[name][key] = "flag " + (flag_names or {}).get(dotted, "--" + key.replace("_", "-"))

    sections = {name: _validate(name, merged[name], origin[name], strict=False) for name in SECTIONS}
    loaded.settings = Settings(**sections)
    for name, cls in SECTIONS.items():
        for key in cls.model_fields:
            loaded.sources[f"{name}.{key}"] = origin[name].get(key, "default")
    return loaded


def show(loaded: Loaded) -> str:
    """The effective config, one key a line, with its source (secrets masked)."""
    lines = []
    for name in SECTIONS:
        section = getattr(loaded.settings, name)
        for key in type(section).model_fields:
            value = getattr(section, key)
            if key in ("api_keys", "api_key", "admin_token", "local_api_keys") and value:
                value = "***" if isinstance(value, str) else ["***"] * len(value)
            lines.append(f"{name}.{key:<24} = {json.dumps(value):<28} # {loaded.sources[f'{name}.{key}']}")
    return "\n".join(lines)
