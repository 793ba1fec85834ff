"""``clawlan front``: run the Clawdbot front end on this box.

Also :func:`launch`, which ``clawlan run`` calls to start the front end beside
the back end as its own process (so its footprint stays its own and an
inference crash cannot take the chat page with it).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clawlan.errors import ConfigError

log = logging.getLogger(__name__)

# Browser flags per render_mode. hardware_accelerated lets Chromium composite
# and rasterise on the GPU even where its blocklist is cautious (NUC iGPUs);
# software keeps everything on the CPU, for boxes whose GPU driver misbehaves.
KIOSK_FLAGS = {
    "hardware_accelerated": ["--enable-gpu-rasterization", "--ignore-gpu-blocklist", "--enable-zero-copy"],
    "software": ["--disable-gpu", "--disable-gpu-compositing", "--disable-smooth-scrolling"],
}
KIOSK_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "front",
        help="run the Clawdbot front end (web chat + local OpenAI endpoint)",
        description="Serve the web chat and a local OpenAI-compatible endpoint that forwards to the "
        "back end found by mDNS (or the static address).",
    )
    p.add_argument("--config", action="append", default=[], metavar="FILE",
                   help="config file (repeatable; the seed's clawbot_config.json and network_config.json merge)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="web chat port (default 8081; the seed opens 8080-8090)")
    p.add_argument("--backend", metavar="URL", help="static back end URL, e.g. http://192.168.1.100:8080")
    p.add_argument("--discovery", choices=["mDNS", "static"], help="discovery protocol (default mDNS)")
    p.add_argument("--fallback-timeout", type=int, metavar="MS", help="ms to browse mDNS before using --backend")
    p.add_argument("--max-sessions", type=int, metavar="N", help="conversations generating at once (default 5)")
    p.add_argument("--render-mode", choices=["hardware_accelerated", "software"])
    p.add_argument("--data-dir", help="where conversations are kept (SQLite)")
    p.add_argument("--docs-dir", help="FAQ/policy folder for customer-service mode")
    p.add_argument("--mdns-interface", action="append", default=None, metavar="ADDR",
                   help="browse mDNS only on this interface address (repeatable; default: all)")
    # Tests browse a private service type so parallel runs never see each other's servers.
    p.add_argument("--mdns-service-type", default=None, help=argparse.SUPPRESS)
    p.add_argument("--trusted-backend", action="append", default=None, metavar="SHA256",
                   help="fingerprint of a back end to use without an admin's accept (repeatable)")
    p.add_argument("--trusted-host", action="append", default=None, metavar="NAME",
                   help="extra Host name the page answers to, e.g. chat.office.lan (repeatable)")
    p.add_argument("--admin-token", default=None,
                   help="token for editing prompts from other machines (default: only from this box)")
    p.add_argument("--segmenter", choices=["jieba", "jieba-full", "bigram"], default=None,
                   help="how Chinese text is split for retrieval (see docs/frontend.md); default jieba")
    p.add_argument("--max-tokens", type=int, default=None, help="longest answer requested from the back end (default 512)")
    p.add_argument("--request-defaults", metavar="JSON", default=None,
                   help='extra fields for every chat request to the back end, e.g. \'{"temperature": 0.3}\'')
    p.add_argument("--kiosk", action="store_true", help="also open a full-screen browser window on the chat")
    p.add_argument("--log-level", type=lambda s: s.upper(), default=None, help="debug, info, warning, error")
    p.set_defaults(func=main)


# The front end's options that ``clawlan run`` passes through to the front end it starts. Its --host,
# --port, --config and --log-level are the server's, so the front end's port is --front-port there.
RUN_FLAGS: list[tuple[str, dict[str, object]]] = [
    ("--front-port", {"type": int, "metavar": "PORT", "help": "chat page port (default 8081)"}),
    ("--docs-dir", {"help": "FAQ/policy folder for customer-service mode (the knowledge base)"}),
    ("--data-dir", {"help": "where the front end keeps conversations (SQLite)"}),
    ("--max-sessions", {"type": int, "metavar": "N", "help": "conversations generating at once (default 5)"}),
    ("--render-mode", {"choices": ["hardware_accelerated", "software"]}),
    ("--admin-token", {"help": "token for editing prompts from other machines"}),
    ("--segmenter", {"choices": ["jieba", "jieba-full", "bigram"], "help": "Chinese word splitting for retrieval"}),
    ("--max-tokens", {"type": int, "help": "longest answer the chat page asks for (default 512)"}),
    ("--request-defaults", {"metavar": "JSON", "help": "extra fields for every chat request, a JSON object"}),
    ("--kiosk", {"action": "store_true", "help": "also open a full-screen browser window on the chat"}),
]


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """``clawlan run``: accept the front end's options (see RUN_FLAGS)."""
    g = p.add_argument_group("front end", "options for the chat page that `clawlan run` starts beside the server")
    for flag, kw in RUN_FLAGS:
        g.add_argument(flag, default=None, **kw)  # type: ignore[arg-type]


def run_args(args: argparse.Namespace) -> list[str]:
    """The ``clawlan front`` arguments for the RUN_FLAGS given to ``clawlan run`` (--front-port excepted)."""
    out: list[str] = []
    for flag, kw in RUN_FLAGS[1:]:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if kw.get("action") == "store_true":
            out += [flag] if value else []
        elif value is not None:
            out += [flag, str(value)]
    return out


def front_config(args: argparse.Namespace):  # noqa: ANN201 - FrontConfig, imported lazily
    from clawlan.config.loader import load_settings
    from clawlan.frontend.app import FrontConfig

    flags = {
        "frontend.host": args.host,
        "frontend.port": args.port,
        "frontend.static_backend": args.backend,
        "frontend.discovery_protocol": args.discovery,
        "frontend.fallback_timeout": args.fallback_timeout,
        "frontend.max_concurrent_sessions": args.max_sessions,
        "frontend.render_mode": args.render_mode,
        "frontend.data_dir": args.data_dir,
        "frontend.docs_dir": args.docs_dir,
        "frontend.admin_token": args.admin_token,
        "frontend.segmenter": args.segmenter,
        "frontend.max_tokens": args.max_tokens,
        "frontend.mdns_interfaces": args.mdns_interface,
        "frontend.trusted_backends": args.trusted_backend,
        "frontend.trusted_hosts": args.trusted_host,
        "frontend.request_defaults": _json_object(args.request_defaults),
    }
    loaded = load_settings(args.config, flags)
    for w in loaded.warnings:
        log.warning("%s", w)
    return FrontConfig.from_settings(loaded.settings.frontend, mdns_service_type=args.mdns_service_type)


def _json_object(raw: str | None) -> dict[str, object] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"--request-defaults is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError("--request-defaults must be a JSON object")
    return value


def kiosk_command(url: str, render_mode: str, browser: str | None = None) -> list[str]:
    exe = browser or next((b for b in KIOSK_BROWSERS if shutil.which(b)), None)
    if exe is None:
        raise ConfigError("--kiosk needs Chromium; install it with: apt-get install chromium")
    return [exe, "--kiosk", f"--app={url}", "--no-first-run", "--disable-sync", *KIOSK_FLAGS[render_mode]]


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from clawlan.frontend.app import build_app
    from clawlan.web.limits import guarded_protocol
    from clawlan.web.listen import bind

    cfg = front_config(args)
    if not 1 <= cfg.port <= 65535 and cfg.port != 0:
        raise ConfigError(f"--port {cfg.port} is not a TCP port")
    app = build_app(cfg)
    url = f"http://{'127.0.0.1' if cfg.host in ('0.0.0.0', '::') else cfg.host}:{cfg.port}/"
    kiosk: subprocess.Popen[bytes] | None = None
    # Bound before anything starts: a taken port is one line naming the flag. TCP_NODELAY: answers stream.
    sock = bind(cfg.host, cfg.port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3,
                            http=guarded_protocol(cfg.header_timeout_ms / 1000.0))  # slow-loris: heads in time
    server = uvicorn.Server(config)
    if args.kiosk:
        kiosk = subprocess.Popen(kiosk_command(url, cfg.render_mode))
    print(f"clawlan front: chat at {url}  (OpenAI endpoint {url}v1)", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        if kiosk is not None and kiosk.poll() is None:
            kiosk.terminate()
    return 0


@dataclass
class FrontProcess:
    """A front end started by :func:`launch`."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when its parent dies, however the parent ends."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def launch(
    config_files: Sequence[str | Path] = (),
    *,
    backend: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    extra_args: Sequence[str] = (),
    wait_s: float = 20.0,
    api_key: str | None = None,
) -> FrontProcess:
    """Start ``clawlan front`` as a child process and return once its page answers.

    ``clawlan run`` uses this with ``backend`` set to its own URL; the front end
    still browses mDNS first unless the config says ``"static"``. ``api_key``
    reaches the child through its environment, not its command line (which
    every user of the box can read in ``ps``).
    """
    import os

    import httpx

    cmd = [sys.executable, "-m", "clawlan", "front", "--host", host]
    for f in config_files:
        cmd += ["--config", str(f)]
    if backend:
        cmd += ["--backend", backend]
    if port is not None:
        cmd += ["--port", str(port)]
    cmd += list(extra_args)
    env = dict(os.environ)
    if api_key:
        env["CLAWLAN_FRONTEND_API_KEY"] = api_key
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    url = f"http://{host}:{port or 8081}/"
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"the front end exited with status {proc.returncode}; run `clawlan front` to see why")
        try:
            if httpx.get(url + "health", timeout=1.0).status_code == 200:
                return FrontProcess(proc, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling a child's port; there is no readiness signal to wait on
    FrontProcess(proc, url).stop()
    raise ConfigError(f"the front end did not answer on {url} within {wait_s:.0f} s")
