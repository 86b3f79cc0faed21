"""`voc up`, `voc down`, `voc status`, `voc logs`, `voc env`: the local stack's lifecycle."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from dataclasses import asdict

from voc.commands import Subparsers, out, profile_parent, stack_of
from voc.stack import SCALABLE, SERVICES, StackError, parse_replicas


def register(subparsers: Subparsers) -> None:
    common = [profile_parent()]
    up = subparsers.add_parser(
        "up",
        parents=common,
        help="start (or reuse) Kafka, Postgres, Redis, fake LLM, services, Prometheus",
    )
    up.add_argument(
        "--no-services", action="store_true", help="only infrastructure, fake LLM and setup"
    )
    up.add_argument(
        "--services",
        metavar="NAMES",
        help="comma-separated services to start (default: all, or $VOC_SERVICES)",
    )
    up.add_argument(
        "--replicas",
        metavar="STAGE=N,...",
        help=f"replicas per stage, e.g. insight=3,translate=2 (stages: {', '.join(SCALABLE)}; "
        "default $VOC_REPLICAS)",
    )
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per step")
    up.set_defaults(func=cmd_up)

    scale = subparsers.add_parser(
        "scale", parents=common, help="run N replicas of stages of the running stack"
    )
    scale.add_argument("counts", metavar="STAGE=N[,STAGE=N...]", help="e.g. insight=3")
    scale.add_argument(
        "--kill",
        action="store_true",
        help="stop surplus replicas with SIGKILL (a crash) instead of SIGTERM",
    )
    scale.set_defaults(func=cmd_scale)

    down = subparsers.add_parser("down", parents=common, help="stop everything `up` started")
    down.add_argument("--purge", action="store_true", help="also delete the profile's data")
    down.set_defaults(func=cmd_down)

    status = subparsers.add_parser("status", parents=common, help="show each component")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    logs = subparsers.add_parser("logs", parents=common, help="tail a component's log")
    logs.add_argument(
        "name", help=f"kafka, postgres, redis, fake-llm, prometheus, {', '.join(SERVICES)}"
    )
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(func=cmd_logs)

    env = subparsers.add_parser(
        "env", parents=common, help='print stack.env as exports: eval "$(voc env)"'
    )
    env.set_defaults(func=cmd_env)


def cmd_up(args: argparse.Namespace) -> int:
    stack = stack_of(args)
    out(f"voc: bringing up the {stack.profile.name} stack in {stack.home}")
    services: bool | list[str] = not args.no_services
    if args.services and not args.no_services:
        services = [n.strip() for n in args.services.split(",") if n.strip()]
    replicas = parse_replicas(args.replicas) if args.replicas else None
    result = stack.up(services=services, timeout=args.timeout, replicas=replicas)
    env = result.env
    out(f"voc: {stack.profile.name} stack up in {result.seconds:.1f}s")
    out(f"  API:        {env.get('VOC_API_URL', '')}   (docs: /docs)")
    out(f"  API key:    {env.get('VOC_API_KEY', '(none: shared.auth not available)')}")
    if env.get("VOC_FAKE_LLM_URL"):
        out(f"  fake LLM:   {env['VOC_FAKE_LLM_URL']}")
    if env.get("VOC_PROMETHEUS_URL"):
        out(f"  Prometheus: {env['VOC_PROMETHEUS_URL']}")
    out(f"  env:        {stack.env_file}")
    out(f'  shell:      eval "$(voc env --profile {stack.profile.name})"')
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    stack = stack_of(args)
    sig = signal.SIGKILL if args.kill else signal.SIGTERM
    for service, count in parse_replicas(args.counts).items():
        running = stack.scale(service, count, sig=sig)
        out(f"voc: {service}: {len(running)} replica(s): {', '.join(running)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stack = stack_of(args)
    stopped = stack.down(purge=args.purge)
    out(f"voc: {stack.profile.name} stack down ({len(stopped)} stopped)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    stack = stack_of(args)
    rows = stack.status()
    if args.json:
        out(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    out(f"{stack.profile.name} stack ({stack.home})")
    out(f"{'NAME':<12} {'PID':>8}  {'STATE':<8} {'PORT':>6}  URL")
    for r in rows:
        state = ("up" if r.alive else "down") + (" (ext)" if r.external else "")
        pid = str(r.pid) if r.pid else "-"
        port = str(r.port) if r.port else "-"
        out(f"{r.name:<12} {pid:>8}  {state:<8} {port:>6}  {r.url}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    path = stack_of(args).log_path(args.name)
    if not path.exists():
        raise StackError(f"no log {path}")
    argv = ["tail", "-n", str(args.lines), *(["-F"] if args.follow else []), str(path)]
    sys.stdout.flush()
    os.execvp("tail", argv)  # replaces this process: Ctrl-C ends the follow cleanly


def cmd_env(args: argparse.Namespace) -> int:
    for key, value in stack_of(args).env().items():
        out(f"export {key}={shlex.quote(value)}")
    return 0
