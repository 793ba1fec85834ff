"""``clawlan clawdbot-config``: point OpenClaw (formerly Clawdbot) at a clawlan server.

It writes, or merges into, the agent's config file:

* ``models.providers.<id>``: base URL, API key, ``api: "openai-completions"``
  and one model whose ``contextWindow`` and ``maxTokens`` come from the
  server's ``GET /v1/models`` (``max_model_len``, else ``context_length``);
* ``request.allowPrivateNetwork: true`` when the server is on a private or
  loopback address, which OpenClaw otherwise refuses;
* ``agents.defaults.model.primary = "<id>/<model id>"``.

Every other key is kept, a timestamped backup is written first, and the
result is strict JSON. OpenClaw accepts JSON5-ish files: ``//`` and ``/* */``
comments and trailing commas are read (and dropped from the rewritten file;
the backup keeps them); anything else JSON5 allows is refused with the line
and column, and ``--print`` shows the block to paste by hand instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from clawlan.errors import ConfigError

__all__ = ["ServerModel", "fetch_server_model", "find_config", "load_config_text", "merge_config", "register"]

DEFAULT_CONTEXT = 8192
# Agents ask for maxTokens on every turn; a cap near the whole window leaves
# no room for the prompt, which is one of the ways OpenClaw breaks locally.
MAX_TOKENS_CAP = 8192


@dataclass
class ServerModel:
    id: str
    context_window: int
    max_tokens: int


def normalize_server(url: str) -> str:
    """``host:8080``, ``http://host:8080/`` or ``…/v1`` to ``http://host:8080``."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--server {url!r} is not an http(s) URL; use e.g. http://192.168.1.20:8080")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def is_private_host(host: str) -> bool:
    """True when ``host`` is (or resolves to) a loopback, private or link-local address."""
    host = host.strip("[]")
    try:
        addrs = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
            addrs = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        except (OSError, ValueError):
            # Unresolvable here (an mDNS name on another box, say): judge by
            # the name, since LAN names are what this tool is for.
            lowered = host.lower().rstrip(".")
            return (
                "." not in lowered
                or lowered == "localhost"
                or lowered.endswith((".local", ".lan", ".home.arpa", ".internal", ".localhost"))
            )
    return any(a.is_private or a.is_loopback or a.is_link_local for a in addrs)


def fetch_server_model(
    server: str,
    api_key: str | None,
    model: str | None = None,
    *,
    transport: Any = None,
    timeout: float = 10.0,
) -> ServerModel:
    """The served model's id, context window and a sensible output cap, from ``GET /v1/models``."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = server + "/v1/models"
    try:
        with httpx.Client(transport=transport, timeout=timeout) as client:
            resp = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"cannot reach {url}: {exc}; check --server (is `clawlan serve` running?)"
        ) from None
    if resp.status_code == 401:
        raise ConfigError(f"{url} refused the API key (401); pass the server's key with --api-key")
    if resp.status_code != 200:
        raise ConfigError(f"{url} answered HTTP {resp.status_code}; is that a clawlan server?")
    try:
        data = resp.json()["data"]
        models = [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{url} did not return an OpenAI model list; is that a clawlan server?") from None
    if not models:
        raise ConfigError(f"{url} lists no models")
    chosen = models[0]
    if model:
        match = [m for m in models if m["id"] == model]
        if not match:
            raise ConfigError(
                f"the server has no model {model!r}; it serves: {', '.join(m['id'] for m in models)}"
            )
        chosen = match[0]
    ctx = (
        _positive_int(chosen.get("max_model_len"))
        or _positive_int(chosen.get("context_length"))
        or DEFAULT_CONTEXT
    )
    max_tokens = _positive_int(chosen.get("max_output_tokens")) or min(MAX_TOKENS_CAP, max(ctx // 4, 1))
    return ServerModel(chosen["id"], ctx, min(max_tokens, ctx))


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def provider_block(
    server: str, api_key: str, model: ServerModel, *, private: bool, name: str | None = None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "baseUrl": server + "/v1",
        "apiKey": api_key,
        "api": "openai-completions",
        "models": [
            {
                "id": model.id,
                "name": name or f"{model.id} (clawlan)",
                "contextWindow": model.context_window,
                "maxTokens": model.max_tokens,
                "input": ["text"],
                "reasoning": False,
            }
        ],
    }
    if private:
        block["request"] = {"allowPrivateNetwork": True}
    return block


def merge_config(config: dict[str, Any], provider_id: str, block: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the provider and default model set; every other key kept.

    An existing provider entry keeps its extra keys (headers, say) and its
    other models; ours replace the keys we own and our model's entry.
    """
    out = json.loads(json.dumps(config))  # a deep copy, and proof it is plain JSON
    models = _dict_at(out, "models")
    providers = _dict_at(models, "providers")
    old = providers.get(provider_id) if isinstance(providers.get(provider_id), dict) else {}
    new = {**old, **{k: v for k, v in block.items() if k not in ("models", "request")}}
    if "request" in block:
        new["request"] = {
            **(old.get("request") if isinstance(old.get("request"), dict) else {}),
            **block["request"],
        }
    ours = block["models"][0]
    kept = [m for m in old.get("models") or [] if isinstance(m, dict) and m.get("id") != ours["id"]]
    new["models"] = [ours, *kept]
    providers[provider_id] = new
    ref = f"{provider_id}/{ours['id']}"
    defaults = _dict_at(_dict_at(out, "agents"), "defaults")
    if isinstance(defaults.get("model"), dict):
        defaults["model"]["primary"] = ref
    else:
        defaults["model"] = {"primary": ref}
    # When the user keeps a model allowlist, the new default must be on it.
    if isinstance(defaults.get("models"), dict):
        defaults["models"].setdefault(ref, {})
    return out


def _dict_at(parent: dict[str, Any], key: str) -> dict[str, Any]:
    if not isinstance(parent.get(key), dict):
        if key in parent and parent[key] is not None:
            raise ConfigError(
                f"config key {key!r} is a {type(parent[key]).__name__}, expected an object; fix the file"
            )
        parent[key] = {}
    return parent[key]


def strip_json5(text: str) -> tuple[str, bool]:
    """Remove ``//`` and ``/* */`` comments and trailing commas outside strings.

    Returns the text and whether anything was removed. Character offsets of
    what remains are not preserved, so errors are reported on the result.
    """
    out: list[str] = []
    i, n, changed = 0, len(text), False
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
            i += 1
        elif c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            changed = True
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ConfigError("unterminated /* comment in the config file")
            out.append("\n" * text.count("\n", i, j))  # keep line numbers for errors
            i = j + 2
            changed = True
        elif c in "}]":
            # Drop a comma that only whitespace separates from this bracket.
            k = len(out) - 1
            while k >= 0 and out[k] in " \t\r\n":
                k -= 1
            if k >= 0 and out[k] == ",":
                del out[k]
                changed = True
            out.append(c)
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out), changed


def load_config_text(text: str, path: Path) -> tuple[dict[str, Any], bool]:
    """Parse a config file's text; (config, whether comments or trailing commas were dropped)."""
    if not text.strip():
        return {}, False
    clean, changed = strip_json5(text)
    try:
        data = json.loads(clean)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not JSON that clawlan can merge into (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "comments and trailing commas are fine, other JSON5 (unquoted keys, single quotes) is not: "
            "fix it, or run with --print and paste the block by hand"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a JSON {type(data).__name__}, not an object")
    return data, changed


def find_config(home: Path, explicit: str | None = None) -> Path:
    """The file to edit: ``--config``, else OpenClaw's, else an existing Clawdbot one, else a new OpenClaw one."""
    if explicit:
        return Path(explicit).expanduser()
    openclaw = home / ".openclaw" / "openclaw.json"
    clawdbot = home / ".clawdbot" / "clawdbot.json"
    if not openclaw.exists() and clawdbot.exists():
        return clawdbot
    return openclaw


def write_config(path: Path, data: dict[str, Any], now: dt.datetime | None = None) -> Path | None:
    """Back up ``path`` (if it exists) beside it, then replace it atomically. Returns the backup."""
    backup = None
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        n = 1
        while backup.exists():
            n += 1
            backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        shutil.copy2(path, backup)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600  # it holds an API key
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return backup


def run(args: argparse.Namespace, *, transport: Any = None, home: Path | None = None) -> int:
    server = normalize_server(args.server)
    provider_id = args.provider_id
    if not provider_id or "/" in provider_id:
        raise ConfigError("--provider-id must be a non-empty name without '/'")
    home = home or Path.home()
    path = find_config(home, args.config)
    existing: dict[str, Any] = {}
    dropped = False
    if path.exists() and not args.print:
        existing, dropped = load_config_text(path.read_text(encoding="utf-8"), path)
    old_key = (((existing.get("models") or {}).get("providers") or {}).get(provider_id) or {}).get("apiKey")
    api_key = args.api_key or os.environ.get("CLAWLAN_API_KEY") or old_key or "clawlan"

    if args.model and args.context_window:
        ctx = args.context_window
        model = ServerModel(args.model, ctx, min(args.max_tokens or min(MAX_TOKENS_CAP, ctx // 4), ctx))
    else:
        model = fetch_server_model(server, api_key, args.model, transport=transport)
        if args.context_window:
            model.context_window = args.context_window
        model.max_tokens = min(args.max_tokens or model.max_tokens, model.context_window)
    host = urlsplit(server).hostname or ""
    block = provider_block(server, api_key, model, private=is_private_host(host))
    ref = f"{provider_id}/{model.id}"

    if args.print:
        snippet = {
            "models": {"providers": {provider_id: block}},
            "agents": {"defaults": {"model": {"primary": ref}}},
        }
        print(json.dumps(snippet, indent=2, ensure_ascii=False))
        return 0
    merged = merge_config(existing, provider_id, block)
    backup = write_config(path, merged)
    print(f"wrote {path}: provider {provider_id!r} -> {block['baseUrl']}, default model {ref}")
    print(f"  contextWindow {model.context_window}, maxTokens {model.max_tokens}")
    if backup:
        print(f"  previous file saved as {backup}")
    if dropped:
        print(
            "  note: comments and trailing commas were not carried over (the backup keeps them)",
            file=sys.stderr,
        )
    print("restart the OpenClaw gateway to pick it up")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "clawdbot-config",
        help="point OpenClaw/Clawdbot at a clawlan server",
        description="Write or merge the clawlan provider and default model into ~/.openclaw/openclaw.json "
        "(or ~/.clawdbot/clawdbot.json), backing the file up first.",
    )
    p.add_argument("--server", required=True, help="the clawlan server, e.g. http://192.168.1.20:8080")
    p.add_argument(
        "--api-key", help="the server's API key (default: $CLAWLAN_API_KEY, the current one, or 'clawlan')"
    )
    p.add_argument("--provider-id", default="clawlan", help="provider name in the config (default: clawlan)")
    p.add_argument("--model", help="model id to use (default: the server's first model)")
    p.add_argument("--context-window", type=int, help="override the context window the server reports")
    p.add_argument(
        "--max-tokens",
        type=int,
        help="override the output cap (default: a quarter of the window, at most 8192)",
    )
    p.add_argument(
        "--config",
        help="config file to edit (default: ~/.openclaw/openclaw.json or ~/.clawdbot/clawdbot.json)",
    )
    p.add_argument("--print", action="store_true", help="print the block instead of writing the file")
    p.set_defaults(func=run)
