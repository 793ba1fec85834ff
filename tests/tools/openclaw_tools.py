"""Twelve tools shaped like OpenClaw's: the schema features its requests use.

Written for these tests (not copied from OpenClaw): anyOf of const-tagged
objects, enum, patternProperties, maxLength, nested objects, optional
properties, integer bounds and a local $ref.
"""

from __future__ import annotations

from typing import Any


def _tool(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


TOOLS: list[dict[str, Any]] = [
    _tool(
        "read",
        "Read a file from the workspace.",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string", "maxLength": 200, "description": "file path"},
                "offset": {"type": "integer", "minimum": 1},
                "limit": {"type": "integer", "minimum": 1, "maximum": 2000},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    ),
    _tool(
        "write",
        "Write a file.",
        {
            "type": "object",
            "properties": {"path": {"type": "string", "maxLength": 200}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    ),
    _tool(
        "exec",
        "Run a shell command.",
        {
            "type": "object",
            "properties": {
                "command": {"type": "string", "maxLength": 500},
                "workdir": {"type": "string"},
                "env": {
                    "type": "object",
                    "patternProperties": {"^[A-Z_][A-Z0-9_]*$": {"type": "string", "maxLength": 100}},
                    "additionalProperties": False,
                },
                "timeout": {"type": "number", "minimum": 0, "maximum": 600},
                "background": {"type": "boolean"},
            },
            "required": ["command"],
        },
    ),
    _tool(
        "process",
        "Manage background processes.",
        {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["list", "poll", "log", "kill"]},
                "sessionId": {"type": "string"},
            },
            "required": ["action"],
        },
    ),
    _tool(
        "browser",
        "Control the browser.",
        {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"action": {"const": "open"}, "url": {"type": "string", "maxLength": 300}},
                    "required": ["action", "url"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {
                        "action": {"const": "click"},
                        "target": {"$ref": "#/$defs/target"},
                    },
                    "required": ["action", "target"],
                    "additionalProperties": False,
                },
                {
                    "type": "object",
                    "properties": {"action": {"const": "snapshot"}},
                    "required": ["action"],
                    "additionalProperties": False,
                },
            ],
            "$defs": {
                "target": {
                    "type": "object",
                    "properties": {"ref": {"type": "string", "maxLength": 40}, "x": {"type": "integer"}},
                    "required": ["ref"],
                }
            },
        },
    ),
    _tool(
        "web_search",
        "Search the web.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 200},
                "count": {"type": "integer", "minimum": 1, "maximum": 10},
                "freshness": {"type": ["string", "null"], "enum": ["day", "week", "month", None]},
            },
            "required": ["query"],
        },
    ),
    _tool(
        "web_fetch",
        "Fetch a URL.",
        {
            "type": "object",
            "properties": {
                "url": {"type": "string", "maxLength": 300},
                "extractMode": {"anyOf": [{"const": "markdown"}, {"const": "text"}]},
                "maxChars": {"type": "integer", "minimum": 100},
            },
            "required": ["url"],
        },
    ),
    _tool(
        "message",
        "Send a message to a channel.",
        {
            "type": "object",
            "properties": {
                "action": {"const": "send"},
                "channel": {"type": "string", "enum": ["whatsapp", "telegram", "slack", "discord"]},
                "to": {"type": "string", "maxLength": 80},
                "text": {"type": "string", "maxLength": 1000},
                "buttons": {
                    "type": "array",
                    "maxItems": 3,
                    "items": {
                        "type": "object",
                        "properties": {
                            "label": {"type": "string", "maxLength": 30},
                            "data": {"type": "string"},
                        },
                        "required": ["label"],
                    },
                },
            },
            "required": ["action", "to", "text"],
        },
    ),
    _tool(
        "cron",
        "Schedule a job.",
        {
            "type": "object",
            "properties": {
                "action": {"type": "string", "enum": ["add", "remove", "list"]},
                "job": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 60},
                        "schedule": {
                            "anyOf": [
                                {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"const": "every"},
                                        "everyMs": {"type": "integer", "minimum": 1000},
                                    },
                                    "required": ["kind", "everyMs"],
                                },
                                {
                                    "type": "object",
                                    "properties": {
                                        "kind": {"const": "cron"},
                                        "expr": {"type": "string", "maxLength": 60},
                                    },
                                    "required": ["kind", "expr"],
                                },
                            ]
                        },
                    },
                    "required": ["name", "schedule"],
                },
            },
            "required": ["action"],
        },
    ),
    _tool(
        "sessions_send",
        "Send a message to another session.",
        {
            "type": "object",
            "properties": {
                "sessionKey": {"type": "string", "maxLength": 100},
                "message": {"type": "string"},
                "timeoutSeconds": {"type": "integer", "minimum": 0, "maximum": 300},
            },
            "required": ["sessionKey", "message"],
        },
    ),
    _tool(
        "memory_search",
        "Search memory notes.",
        {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 200},
                "maxResults": {"type": "integer", "minimum": 1, "maximum": 50},
                "minScore": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["query"],
        },
    ),
    _tool(
        "get_weather",
        "Get the current weather for a city.",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 60},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    ),
]


def schema_of(name: str) -> dict[str, Any]:
    for tool in TOOLS:
        if tool["function"]["name"] == name:
            return tool["function"]["parameters"]
    raise KeyError(name)
