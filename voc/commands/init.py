"""`voc init`: apply the database migrations and create the Kafka topics, from the environment.

This is the deployments' setup step (the docker-compose `init` service, the Helm hook Job):
it reads DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS and VOC_TOPIC_PREFIX (default `voc.`) from the
environment and never looks at a local stack (`voc up` does the same for its own stack).
Both steps are idempotent, so it runs safely before every upgrade. Exit status 0 when the
schema is at head and every topic exists, 1 with a one-line error otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from voc.commands import CommandError, Subparsers, out

DEFAULT_TOPIC_PREFIX = "voc."


def register(subparsers: Subparsers) -> None:
    init = subparsers.add_parser(
        "init",
        help="apply migrations and create topics (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS)",
        description=(
            "Bring the database schema to head and create every missing topic, using "
            "DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS and VOC_TOPIC_PREFIX from the environment "
            "(not a local stack). Idempotent."
        ),
    )
    init.set_defaults(func=cmd_init)


def _required(var: str) -> str:
    value = os.environ.get(var, "").strip()
    if not value:
        raise CommandError(f"{var} is not set (voc init reads it from the environment)")
    return value


def _one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, for a clean one-line error."""
    name = type(exc).__name__
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return name
    return lines[0] if lines[0].startswith(name) else f"{name}: {lines[0]}"


def _redacted(database_url: str) -> str:
    """The URL without its password, for output."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(database_url).render_as_string(hide_password=True)
    except Exception:
        return "DATABASE_URL"


def cmd_init(args: argparse.Namespace) -> int:
    database = _required("DATABASE_URL")
    bootstrap = _required("KAFKA_BOOTSTRAP_SERVERS")
    prefix = os.environ.get("VOC_TOPIC_PREFIX", "").strip() or DEFAULT_TOPIC_PREFIX
    # aiokafka logs each failed connection attempt; the error below says it in one line.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    try:
        from shared.db.migrate import upgrade
        from shared.topics import ALL_TOPICS, ensure_topics_sync
    except ImportError as exc:
        raise CommandError(f"cannot import the setup code: {_one_line(exc)}") from exc

    t0 = time.monotonic()
    try:
        upgrade(database)
    except Exception as exc:
        raise CommandError(f"migrations failed: {_one_line(exc)}") from exc
    out(f"voc init: {_redacted(database)} schema at head ({time.monotonic() - t0:.1f}s)")

    t0 = time.monotonic()
    try:
        created = ensure_topics_sync(bootstrap, prefix)
    except Exception as exc:
        raise CommandError(f"creating topics on {bootstrap} failed: {_one_line(exc)}") from exc
    out(
        f"voc init: {len(ALL_TOPICS)} topics {prefix}* on {bootstrap}, "
        f"{len(created)} created ({time.monotonic() - t0:.1f}s)"
    )
    return 0
