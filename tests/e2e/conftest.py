"""Fixtures of the end-to-end tests: an API client, the fake LLM's admin API, Postgres."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest


@pytest.fixture(scope="module")
def api(stack: Any) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack["VOC_API_URL"],
        headers={"Authorization": f"Bearer {stack['VOC_API_KEY']}"},
        timeout=60.0,
    ) as client:
        yield client


@pytest.fixture(scope="module")
def fake_llm(stack: Any) -> Iterator[httpx.Client]:
    url = stack.get("VOC_FAKE_LLM_URL")
    if not url:
        pytest.skip("the stack does not run the fake LLM (a real provider is configured)")
    with httpx.Client(base_url=url, timeout=10.0) as client:
        yield client


@pytest.fixture(scope="module")
def db(stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(stack["DATABASE_URL"], autocommit=True) as conn:
        yield conn
