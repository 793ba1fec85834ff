"""``clawlan bench``: its options, and one run from them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from clawlan.errors import ConfigError
from clawlan.ops.bench.report import plot, ratio_table, table, write_json
from clawlan.ops.bench.runner import Bench
from clawlan.ops.bench.workload import Workload


def parse_concurrency(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"--concurrency {text!r} must be comma-separated positive integers, e.g. 1,2,4,8")
    return values


def run(args: argparse.Namespace) -> int:
    import logging

    from tqdm import tqdm

    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would break the bar

    w = Workload(
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        requests_per_client=args.requests_per_client,
        concurrency=parse_concurrency(args.concurrency),
        endpoint=args.endpoint,
        model=args.model,
        api_key=args.api_key,
        seed=args.seed,
        switch_history_tokens=args.switch_history,
        switch_other_sessions=args.switch_sessions,
    )
    servers = [(args.name, args.url)]
    if args.compare:
        servers.append((args.compare_name, args.compare))
    bar = tqdm(total=0, unit="req", desc="bench", disable=args.quiet, leave=False)
    bench = Bench(w, on_request=lambda: bar.update(1))
    if args.no_switch:
        bar.total = len(servers) * sum(c * w.requests_per_client for c in w.concurrency)
    else:
        bar.total = bench.total_requests(len(servers))
    try:
        results = bench.run(servers, switch=not args.no_switch)
    finally:
        bar.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    j = write_json(results, w, out / f"bench-{stamp}.json")
    png = plot(results, out / f"bench-{stamp}.png")
    print(table(results))
    if len(results) > 1:
        print()
        print(ratio_table(results[0], results[1]))
    print(f"\nwrote {j} and {png}")
    return 1 if any(r.failed for res in results for r in res.rounds) else 0


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("bench", help="load-test an OpenAI-compatible server: TTFT, TPOT, ITL, throughput")
    sp.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (default %(default)s)")
    sp.add_argument("--name", default="clawlan", help="label for --url in tables and plots")
    sp.add_argument("--compare", metavar="URL", help="a second server run through the same workload")
    sp.add_argument("--compare-name", default="peer", help="label for --compare")
    sp.add_argument(
        "--concurrency", default="1,2,4,8", help="clients per round, comma-separated (default %(default)s)"
    )
    sp.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends per round")
    sp.add_argument(
        "--input-tokens", type=int, default=250, help="prompt length, about (default %(default)s)"
    )
    sp.add_argument(
        "--output-tokens", type=int, default=64, help="tokens generated per request (default %(default)s)"
    )
    sp.add_argument("--endpoint", choices=["completions", "chat"], default="completions", help="API to call")
    sp.add_argument("--model", help="model id to send (default: the server's first /v1/models entry)")
    sp.add_argument("--api-key", help="Bearer key, if the server requires one")
    sp.add_argument(
        "--switch-history", type=int, default=1500, help="context-switch conversation length, tokens"
    )
    sp.add_argument("--switch-sessions", type=int, default=3, help="other sessions run between the two turns")
    sp.add_argument("--no-switch", action="store_true", help="skip the context-switch probe")
    sp.add_argument("--seed", type=int, default=0, help="seed for the prompt words")
    sp.add_argument(
        "--out", default="bench/results", help="folder for the JSON and PNG (default %(default)s)"
    )
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(func=run)
