"""Shared pytest setup: the test-profile local stack for integration and e2e tests.

- `stack` (session): makes sure `Stack(profile="test")` is up (idempotent: under `make test` it
  is already running and is simply reused), puts its stack.env into os.environ so `shared`
  settings find Kafka/Postgres/Redis/the fake LLM, and returns a `StackEnv`: the env as a dict
  (`stack["DATABASE_URL"]`) that also has the Stack's methods (`stack.kill_service("ingest")`,
  `stack.start_service("ingest")`, `stack.service_pid(...)`). If this fixture had to start the
  stack itself, it stops it at the end of the session.
- `stack_ctl` (session): the plain `Stack` object.
- Tests under tests/integration and tests/e2e get the stack automatically and are marked
  `integration` / `e2e`; tests/unit never start anything.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voc.stack import Stack

TESTS = Path(__file__).resolve().parent
STACK_DIRS = {"integration": "integration", "e2e": "e2e"}  # directory -> marker


class StackEnv(dict[str, str]):
    """stack.env as a dict, plus every `Stack` method and attribute (delegated to `.ctl`)."""

    def __init__(self, ctl: Stack, env: dict[str, str]) -> None:
        super().__init__(env)
        self.ctl = ctl

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ctl, name)


def _stack_dir(path: Path) -> str | None:
    try:
        first = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return first if first in STACK_DIRS else None


def pytest_configure(config: pytest.Config) -> None:
    # Settings objects may be built when test modules are imported (before any fixture runs),
    # so load an existing test stack.env now - unless only unit tests were selected.
    selected = [Path(a.split("::")[0]) for a in config.args] or [TESTS]
    unit_only = all(p.resolve().is_relative_to(TESTS / "unit") for p in selected)
    test_stack = Stack(profile="test")
    if not unit_only and test_stack.env_file.exists():
        os.environ.update(test_stack.env())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        where = _stack_dir(Path(str(item.path)))
        if where is not None:
            item.add_marker(getattr(pytest.mark, STACK_DIRS[where]))


@pytest.fixture(scope="session")
def stack_ctl() -> Stack:
    """The test-profile Stack (start_service, kill_service, status, ...)."""
    return Stack(profile="test")


@pytest.fixture(scope="session")
def stack(stack_ctl: Stack) -> Iterator[StackEnv]:
    """The running test stack: its stack.env (also applied to os.environ) and its controls."""
    started_here = not stack_ctl.is_running()
    stack_ctl.up()
    env = stack_ctl.env()
    os.environ.update(env)
    yield StackEnv(stack_ctl, env)
    if started_here:
        stack_ctl.down()


@pytest.fixture(autouse=True)
def _stack_for_stack_tests(request: pytest.FixtureRequest) -> None:
    """Integration and e2e tests need the stack even if they do not ask for it by name."""
    if _stack_dir(Path(str(request.node.path))) is not None:
        request.getfixturevalue("stack")
