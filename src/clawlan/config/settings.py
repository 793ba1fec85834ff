"""The configuration schema.

The seed writes two files. ``network_config.json`` has a ``backend`` section
(``service_port``, ``max_connections``, ``timeout_ms``) and a ``frontend``
section (``discovery_protocol``, ``fallback_timeout``); ``clawbot_config.json``
has a ``frontend`` section (``render_mode``, ``max_concurrent_sessions``). Both
are read exactly as the seed writes them and merge into one :class:`Settings`.
Everything else the seed does not name lives in a ``server`` section (and a
``discovery`` one), so the seed's files stay valid as they are.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    # Unknown keys are reported as warnings by the loader, not silently kept.
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


class BackendSection(Section):
    """The seed's ``backend`` section of network_config.json."""

    service_port: int = Field(8080, ge=1, le=65535, description="TCP port of the inference service")
    max_connections: int = Field(
        100, ge=1, le=100_000, description="requests admitted at once; more get 503 with Retry-After"
    )
    timeout_ms: int = Field(
        30_000,
        ge=1,
        le=86_400_000,
        description="longest a request may go without progress (queued, or waiting for its next token)",
    )


class FrontendSection(Section):
    """The seed's ``frontend`` sections of both files, merged."""

    discovery_protocol: Literal["mDNS", "static"] = Field("mDNS", description="how a front end finds the back end")
    fallback_timeout: int = Field(
        5000, ge=0, le=600_000, description="ms to browse mDNS before using static_backend"
    )
    static_backend: str = Field("http://127.0.0.1:8080", description="back end used when mDNS finds none")
    render_mode: Literal["hardware_accelerated", "software"] = Field(
        "hardware_accelerated", description="GPU compositing and animations in the chat page and kiosk window"
    )
    max_concurrent_sessions: int = Field(
        5, ge=1, le=1000, description="conversations that generate at once from this device"
    )
    host: str = Field("127.0.0.1", description="address the front end binds to")
    port: int = Field(8081, ge=1, le=65535, description="web chat port (the seed opens 8080-8090)")
    data_dir: str | None = Field(None, description="where conversations live (SQLite); default: ~/.local/share/clawlan/front (config/paths.py)")
    docs_dir: str | None = Field(None, description="folder of FAQ/policy documents for customer-service mode")
    api_key: str | None = Field(None, description="key sent to the back end when it requires one")
    segmenter: Literal["jieba", "jieba-full", "bigram"] = Field(
        "jieba", description="how Chinese text is split for retrieval (docs/frontend.md)"
    )
    max_tokens: int = Field(512, ge=1, le=1_000_000, description="longest answer asked of the back end")
    admin_token: str | None = Field(None, description="token to edit mode prompts from other machines")
    trusted_backends: list[str] = Field(
        default_factory=list, description="SHA-256 fingerprints of back ends used without an admin's accept"
    )
    trusted_hosts: list[str] = Field(
        default_factory=list, description="extra Host names the page answers to (besides loopback and this box's own)"
    )
    local_api_keys: list[str] = Field(
        default_factory=list, description="keys LAN callers of the local /v1 endpoint present; empty: loopback only"
    )
    mdns_interfaces: list[str] = Field(default_factory=list, description="interface addresses to browse; empty: all")
    request_defaults: dict[str, Any] = Field(
        default_factory=dict, description="extra fields for every chat request, e.g. temperature"
    )
    # The same door as a server's (web/limits.py): staff browsers and the LAN reach the page.
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=1 << 30, description="largest JSON or /v1 body (uploads have their own cap); more gets 413"
    )
    header_timeout_ms: int = Field(
        10_000, ge=100, le=600_000, description="a connection must send a request's headers within this"
    )
    body_timeout_ms: int = Field(
        60_000, ge=100, le=3_600_000, description="a request's body (an upload too) must arrive within this (408 otherwise)"
    )


class ServerSection(Section):
    """Everything about the shared model server the seed does not name."""

    model: str | None = Field(None, description="GGUF file; empty means the embedded Gemma 3 270M")
    model_sha256: str | None = Field(None, description="expected sha256 of the model file")
    model_alias: str | None = Field(None, description="model id reported by /v1/models")
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 serves the LAN")
    batch_size: int = Field(8, ge=1, le=128, description="sequences decoded together (lowered on out-of-memory)")
    max_wait_ms: int = Field(50, ge=0, le=10_000, description="an idle engine waits this long to batch arrivals")
    max_context_tokens: int | None = Field(
        None, ge=64, le=1_048_576, description="per-request context; default: the largest that fits"
    )
    kv_tokens: int | None = Field(
        None, ge=256, le=16_777_216, description="KV cache cells shared by all sequences; default: fit memory"
    )
    memory_budget_mb: int | None = Field(
        None,
        ge=64,
        description="cap on the KV cache's memory; default: a quarter of the free RAM. The default cache "
        "is sized to the model (max(32k cells, 4k per sequence), trained context permitting), usually below the cap",
    )
    prefill_chunk: int = Field(512, ge=16, le=16384, description="token budget of one engine step")
    kv_layout: Literal["auto", "streams", "unified"] = Field(
        "auto",
        description="KV cache layout: one stream per sequence (faster prompts; needs kv_tokens >= batch_size x "
        "context), one unified cache (sequences share every cell), or auto: streams where they fit",
    )
    cache_ram_mb: int = Field(
        2048, ge=0, le=1_048_576, description="host RAM for idle prefix-cache entries; 0: keep them in the KV cache"
    )
    draft_tokens: int = Field(
        8, ge=0, le=64, description="prompt-lookup draft tokens per sequence and step (speculative decoding); 0: off"
    )
    overlap: Literal["auto", "on", "off"] = Field(
        "auto",
        description="prepare the next engine step while the device computes this one; auto: on a GPU when "
        "draft_tokens is 0 (a CPU computes inside the call, so there is nothing to hide)",
    )
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads; default: physical cores")
    gpu_layers: int = Field(0, ge=-1, le=100_000, description="layers offloaded to a GPU (-1: all)")
    api_keys: list[str] = Field(default_factory=list, description="accepted Bearer keys; empty: no auth")
    tls_cert: str | None = Field(None, description="PEM certificate for HTTPS")
    tls_key: str | None = Field(None, description="PEM private key for HTTPS")
    tls: bool | None = Field(
        None, description="HTTPS with this server's own pinned certificate; default: on when serving the LAN"
    )
    state_dir: str | None = Field(None, description="where the server keeps its TLS identity; default ~/.local/state/clawlan/server")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty: none")
    max_request_ms: int | None = Field(None, ge=1, description="optional bound on a request's total time")
    drain_seconds: int = Field(
        3, ge=0, le=3600, description="on SIGTERM, how long in-flight requests may finish before they are cut"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log verbosity")
    # Limits at the door (docs/security.md): what one request may cost before the engine sees it.
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=1 << 30, description="largest request body; more gets 413 before it is read"
    )
    max_prompt_chars: int = Field(
        1_000_000, ge=1000, le=100_000_000, description="largest prompt in characters, checked before tokenizing"
    )
    max_schema_bytes: int = Field(
        256 * 1024, ge=1024, le=1 << 30, description="largest tools + response_format JSON in one request"
    )
    max_schema_depth: int = Field(16, ge=1, le=1000, description="deepest nesting of subschemas in a JSON Schema")
    max_grammar_bytes: int = Field(
        1024 * 1024, ge=1024, le=1 << 30, description="largest grammar built from a request's schemas"
    )
    grammar_timeout_ms: int = Field(2000, ge=1, le=600_000, description="time budget to build a request's grammar")
    header_timeout_ms: int = Field(
        10_000, ge=100, le=600_000, description="a connection must send a request's headers within this"
    )
    body_timeout_ms: int = Field(
        30_000, ge=100, le=3_600_000, description="a request's body must arrive within this (408 otherwise)"
    )
    default_max_tokens: int = Field(
        4096, ge=0, le=16_777_216, description="output cap for a chat request that sets no max_tokens; 0: the context"
    )

    @field_validator("api_keys")
    @classmethod
    def _no_empty_key(cls, keys: list[str]) -> list[str]:
        # An empty key would let 'Authorization: Bearer' with no token in, while /health says auth=1.
        if any(not k.strip() for k in keys):
            raise ValueError("an empty API key would accept requests with no key; give a real key or none")
        return keys


class DiscoverySection(Section):
    advertise: bool | None = Field(None, description="mDNS advertising; default: on when bound to the LAN")
    service_name: str | None = Field(None, description="mDNS instance name; default: clawlan on HOSTNAME")


class Settings(BaseModel):
    model_config = ConfigDict(extra="ignore")

    backend: BackendSection = Field(default_factory=BackendSection)
    frontend: FrontendSection = Field(default_factory=FrontendSection)
    server: ServerSection = Field(default_factory=ServerSection)
    discovery: DiscoverySection = Field(default_factory=DiscoverySection)

    @property
    def lan(self) -> bool:
        """Bound to something other than loopback."""
        return self.server.host not in ("127.0.0.1", "localhost", "::1")

    @property
    def advertise(self) -> bool:
        return self.lan if self.discovery.advertise is None else self.discovery.advertise


SECTIONS: dict[str, type[Section]] = {
    "backend": BackendSection,
    "frontend": FrontendSection,
    "server": ServerSection,
    "discovery": DiscoverySection,
}
