"""Session-wide fixtures: the embedded model loaded once, and real servers on loopback.

``serve(**overrides)`` starts a real clawlan server (uvicorn, real engine,
real model) on 127.0.0.1 with an ephemeral port; every server shares the one
loaded model. Overrides are dotted-free keyword names of ``server`` /
``backend`` / ``discovery`` settings, e.g. ``serve(batch_size=1, timeout_ms=500)``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clawlan.config.settings import SECTIONS, Settings

# Small enough to allocate quickly, big enough for an OpenClaw-sized prompt.
TEST_DEFAULTS = {"max_context_tokens": 4096, "kv_tokens": 16384, "threads": 2}


def make_settings(**overrides: Any) -> Settings:
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in {**TEST_DEFAULTS, **overrides}.items():
        # The server's settings first: the front end has limits of the same names (frontend.max_body_bytes ...).
        owners = [n for n, cls in SECTIONS.items() if key in cls.model_fields]
        owner = "server" if "server" in owners else next(iter(owners), None)
        if owner is None:
            raise KeyError(f"unknown setting {key}")
        sections[owner][key] = value
    return Settings(**{n: SECTIONS[n](**v) for n, v in sections.items()})


@pytest.fixture(scope="session")
def model_info() -> Any:
    from clawlan.model.store import resolve

    return resolve(None)


@pytest.fixture(scope="session")
def llama_model(model_info: Any) -> Iterator[Any]:
    from clawlan.engine.llama import Model

    # bench/gpu.sh --tests runs the real-model tests offloaded on a GPU build: CLAWLAN_TEST_GPU_LAYERS=-1
    m = Model(model_info.path, gpu_layers=int(os.environ.get("CLAWLAN_TEST_GPU_LAYERS", "0")))
    yield m
    m.close()


@pytest.fixture(scope="session")
def serve(llama_model: Any, model_info: Any) -> Iterator[Callable[..., Any]]:
    from clawlan.server.backend import Backend
    from clawlan.server.serving import RunningServer

    running: list[RunningServer] = []

    def start(**overrides: Any) -> RunningServer:
        settings = make_settings(**overrides)
        server = RunningServer(settings, Backend(settings, model=llama_model, info=model_info), port=0)
        running.append(server)
        server.start()
        assert server.backend.ready, server.backend.error
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture(scope="session")
def backend(serve: Callable[..., Any]) -> Any:
    """A default real server on the embedded model (batch 8)."""
    return serve()


# -- mDNS and TLS servers on loopback (tests/discovery/test_trust.py, tests/ops/test_doctor_tls.py) --


@pytest.fixture
def service_type() -> str:
    """A service type of this test's own, so no other advertiser on the machine answers it."""
    return f"_clw{uuid.uuid4().hex[:8]}._tcp.local."


@pytest.fixture
def advertiser(service_type: str) -> Iterator[Any]:
    from tests.discovery.tls_stub import Advertiser

    adv = Advertiser(service_type)
    yield adv
    adv.close()


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    """Servers a test starts, stopped after it."""
    started: list[Any] = []
    yield started
    for s in started:
        s.stop()
