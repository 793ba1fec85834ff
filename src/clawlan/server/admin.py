"""The service's read-only endpoints: health, load (for routers), Prometheus metrics, models."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from clawlan.server.backend import Backend
from clawlan.server.metrics import Metrics


class Admin:
    def __init__(self, backend: Backend, metrics: Metrics) -> None:
        self.backend = backend
        self.metrics = metrics

    async def health(self, request: Request) -> Response:
        b = self.backend
        if b.ready:
            return JSONResponse({"status": "ok", "model": b.model_id, "backend": b.devices and b.devices.to_dict()})
        if b.error:
            return JSONResponse({"status": "error", "error": b.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503)

    async def load(self, request: Request) -> Response:
        """The load figure vLLM's and SGLang's routers poll (``GET /get_load`` -> ``{"load": n}``):
        sequences running plus requests waiting, so power_of_two and the cache-aware balancer see real load."""
        eng = self.backend.engine
        if eng is None:
            return JSONResponse({"load": 0, "running": 0, "waiting": 0})
        running, waiting = len(eng.scheduler.running), len(eng.scheduler.waiting)
        return JSONResponse({"load": running + waiting, "running": running, "waiting": waiting})

    async def metrics_endpoint(self, request: Request) -> Response:
        # Off the loop: collectors read /proc and may run rocm-smi (cached briefly, see metrics).
        text = await asyncio.to_thread(self.metrics.render)
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def models(self, request: Request) -> Response:
        b = self.backend
        data = []
        if b.ready:
            info = b.info
            data.append(
                {
                    "id": b.model_id,
                    "object": "model",
                    "created": int(info.path.stat().st_mtime),
                    "owned_by": "clawlan",
                    "max_model_len": b.plan.max_context,
                    "context_length": b.plan.max_context,
                    "meta": {
                        "architecture": info.architecture,
                        "n_params": info.n_params,
                        "n_ctx_train": info.context_length,
                        "quantization": info.file_type,
                        "chat_template": b.template.family,
                        "backend": b.devices and b.devices.to_dict(),  # CPU / CUDA / Vulkan ... and its devices
                    },
                }
            )
        return JSONResponse({"object": "list", "data": data})
