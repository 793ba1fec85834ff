"""``clawlan serve`` and ``clawlan config show`` (``clawlan run`` is :mod:`clawlan.run`)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from clawlan.config import load_settings
from clawlan.config.loader import show

log = logging.getLogger(__name__)

# flag -> dotted config key; the flag wins over environment and files.
FLAG_KEYS = {
    "model": "server.model",
    "sha256": "server.model_sha256",
    "host": "server.host",
    "port": "backend.service_port",
    "batch_size": "server.batch_size",
    "max_wait_ms": "server.max_wait_ms",
    "ctx": "server.max_context_tokens",
    "kv_tokens": "server.kv_tokens",
    "memory_budget_mb": "server.memory_budget_mb",
    "threads": "server.threads",
    "draft_tokens": "server.draft_tokens",
    "cache_ram_mb": "server.cache_ram_mb",
    "kv_layout": "server.kv_layout",
    "overlap": "server.overlap",
    "gpu_layers": "server.gpu_layers",
    "api_key": "server.api_keys",
    "max_connections": "backend.max_connections",
    "timeout_ms": "backend.timeout_ms",
    "tls_cert": "server.tls_cert",
    "tls_key": "server.tls_key",
    "cors_origin": "server.cors_origins",
    "advertise": "discovery.advertise",
    "log_level": "server.log_level",
}


def add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="JSON config file (repeatable: network_config.json, clawbot_config.json)")
    p.add_argument("--model", metavar="PATH", help="GGUF model file (default: the embedded Gemma 3 270M)")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 of the model file")
    p.add_argument("--host", help="bind address (default 127.0.0.1; 0.0.0.0 serves the LAN)")
    p.add_argument("--port", type=int, help="service port (default 8080)")
    p.add_argument("--batch-size", type=int, help="sequences decoded together (default 8)")
    p.add_argument("--max-wait-ms", type=int, help="idle engine waits this long to batch arrivals (default 50)")
    p.add_argument("--ctx", type=int, help="max context tokens per request (default: largest that fits)")
    p.add_argument("--kv-tokens", type=int, help="KV cache cells shared by all sequences")
    p.add_argument("--memory-budget-mb", type=int, help="memory for the KV cache (default: 25%% of free RAM)")
    p.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    p.add_argument("--kv-layout", choices=["auto", "streams", "unified"], help="KV layout (default auto: one stream per sequence where every context fits)")
    p.add_argument("--cache-ram-mb", type=int, help="host RAM for idle prefix-cache entries, 0 keeps them in the KV cache (default 2048)")
    p.add_argument("--overlap", choices=["auto", "on", "off"], help="prepare step N+1 while step N computes (default auto: on a GPU with --draft-tokens 0)")
    p.add_argument("--draft-tokens", type=int, help="prompt-lookup draft tokens per step, 0 turns speculation off (default 8)")
    p.add_argument("--gpu-layers", type=int, help="layers to offload to a GPU (-1: all)")
    p.add_argument("--api-key", action="append", help="accepted Bearer key (repeatable)")
    p.add_argument("--max-connections", type=int, help="requests admitted at once (default 100)")
    p.add_argument("--timeout-ms", type=int, help="longest wait for progress (default 30000)")
    p.add_argument("--tls-cert", metavar="PEM", help="TLS certificate")
    p.add_argument("--tls-key", metavar="PEM", help="TLS private key")
    p.add_argument("--cors-origin", action="append", help="allowed CORS origin (repeatable)")
    p.add_argument("--advertise", action=argparse.BooleanOptionalAction, default=None, help="mDNS advertising (default: on when bound to the LAN)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="log verbosity")


def settings_from_args(args: argparse.Namespace) -> Any:
    flags = {key: getattr(args, name, None) for name, key in FLAG_KEYS.items()}
    names = {key: "--" + name.replace("_", "-") for name, key in FLAG_KEYS.items()}
    loaded = load_settings(args.config, flags, flag_names=names)
    for w in loaded.warnings:
        log.warning("%s", w)
    return loaded


def cmd_serve(args: argparse.Namespace) -> int:
    from clawlan.model.store import resolve
    from clawlan.server.backend import Backend, check_engine_settings
    from clawlan.server.serving import RunningServer

    settings = check_engine_settings(settings_from_args(args).settings)
    logging.getLogger().setLevel(settings.server.log_level.upper())
    # Check the model file before listening, so a bad file is one line and a non-zero exit.
    info = resolve(settings.server.model, settings.server.model_sha256)
    server = RunningServer(settings, Backend(settings, info=info))
    print(f"clawlan: serving the OpenAI API at {server.base_url}/v1 (model {info.path.name})", flush=True)
    server.run()
    return 0 if server.backend.error is None else 1


def cmd_config_show(args: argparse.Namespace) -> int:
    print(show(settings_from_args(args)))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the shared model server (OpenAI API)")
    add_server_flags(p)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("config", help="configuration tools")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    s = csub.add_parser("show", help="print the effective config and where each value came from")
    add_server_flags(s)
    s.set_defaults(func=cmd_config_show)
