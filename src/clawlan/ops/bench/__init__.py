"""``clawlan bench``: an OpenAI-compatible load generator, usable as a library.

Metrics follow vLLM's ``bench serve`` definitions:

* **TTFT** - request sent to first streamed token;
* **TPOT** - per request, ``(e2e - ttft) / (output_tokens - 1)``: the decode pace after the first token;
* **ITL** - every gap between two successive streamed chunks;
* **E2E** - request sent to the last byte;
* **output throughput** - all output tokens of a round / the round's wall time.

``bench/serve.py`` drives this module against clawlan and llama-server side by side.

The package, one concept per module: :mod:`.workload` (what is sent), :mod:`.request` (one
streamed request, timed), :mod:`.results` (a round's and a server's figures), :mod:`.runner`
(rounds against several servers), :mod:`.report` (tables, ratios, plot, JSON), :mod:`.command`
(``clawlan bench``).
"""

from __future__ import annotations

from clawlan.ops.bench.command import parse_concurrency, register, run
from clawlan.ops.bench.report import plot, ratio_table, ratios, table, write_json
from clawlan.ops.bench.request import RequestResult, stream_request
from clawlan.ops.bench.results import RoundStats, ServerResult, SwitchStats, summary
from clawlan.ops.bench.runner import Bench, base_url
from clawlan.ops.bench.workload import PromptMaker, Workload

__all__ = [
    "Bench",
    "PromptMaker",
    "RequestResult",
    "RoundStats",
    "ServerResult",
    "SwitchStats",
    "Workload",
    "base_url",
    "parse_concurrency",
    "plot",
    "ratio_table",
    "ratios",
    "register",
    "run",
    "stream_request",
    "summary",
    "table",
    "write_json",
]
