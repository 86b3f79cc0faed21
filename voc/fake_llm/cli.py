"""Command line of the fake LLM: `python -m voc.fake_llm --port P [options]`, or
`voc fake-llm ...` through `register(subparsers)`.

Flags override `VOC_FAKE_LLM_*` environment variables, which override the defaults.
With `--ready-file PATH` the base URL (`http://host:port`) is written to PATH once the
server listens (useful with `--port 0`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from voc.fake_llm.config import FakeConfig, config_from_env, expand_latency

log = logging.getLogger(__name__)

_RATE_FLAGS = (
    ("error-rate", "answer 500/503"),
    ("timeout-rate", "hang (until the client gives up, or --hang-s)"),
    ("malformed-rate", "unrepairable answer content"),
    ("truncated-rate", "answer cut at 60%% with finish_reason=length"),
    ("fenced-rate", "valid JSON wrapped in prose and ``` fences (repairable)"),
    ("missing-item-rate", "translate: drop one item of the batch"),
    ("bad-quote-rate", "insight: quotes that are not in the review text"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The fake's flags (all optional)."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("VOC_FAKE_LLM_PORT") or 18080),
        help="0 = any free port (default: $VOC_FAKE_LLM_PORT or 18080)",
    )
    p.add_argument("--ready-file", type=Path, help="write the base URL here when listening")
    p.add_argument("--model", help="model name reported by /v1/models")
    p.add_argument("--latency-ms", help='latency range "min-max" in ms, e.g. 300-1500')
    p.add_argument(
        "--rps", type=float, dest="rate_limit_rps", help="server-side limit, requests/s (0 = off)"
    )
    p.add_argument(
        "--burst",
        type=float,
        dest="rate_limit_burst",
        help="server-side bucket depth (default rps/10)",
    )
    for flag, help_text in _RATE_FLAGS:
        p.add_argument(f"--{flag}", type=float, help=f"fraction of requests: {help_text}")
    p.add_argument("--fault-match", help="inject faults only into inputs containing this")
    p.add_argument("--hang-s", type=float, help="how long an injected hang lasts (600)")
    p.add_argument("--seed", type=int)
    p.add_argument("--log-level", default="INFO")


def config_from_args(args: argparse.Namespace) -> FakeConfig:
    """Environment config with the given flags applied."""
    patch: dict[str, Any] = {}
    for name in (
        "model",
        "latency_ms",
        "rate_limit_rps",
        "rate_limit_burst",
        "fault_match",
        "hang_s",
        "seed",
        *(f.replace("-", "_") for f, _ in _RATE_FLAGS),
    ):
        value = getattr(args, name, None)
        if value is not None:
            patch[name] = value
    return config_from_env().updated(expand_latency(patch))


def run(args: argparse.Namespace) -> int:
    """Run the server in the foreground until interrupted."""
    import uvloop

    from voc.fake_llm.server import serve

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    config = config_from_args(args)
    ready_file: Path | None = args.ready_file

    def on_ready(url: str) -> None:
        log.info("fake llm ready at %s", url)
        if ready_file is not None:
            tmp = ready_file.with_suffix(ready_file.suffix + ".tmp")
            tmp.write_text(url + "\n")
            tmp.replace(ready_file)

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(config, args.host, args.port, on_ready=on_ready))
    log.info("fake llm stopped")
    return 0


def register(subparsers: Any) -> None:
    """Add the `fake-llm` subcommand to the `voc` CLI (its handler is `args.func(args)`)."""
    p = subparsers.add_parser(
        "fake-llm",
        help="run the fake OpenAI-compatible LLM server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    """`python -m voc.fake_llm`."""
    parser = argparse.ArgumentParser(
        prog="python -m voc.fake_llm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
