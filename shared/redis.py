"""The one way services open Redis: a bounded, *blocking* connection pool.

redis-py's default pool raises `MaxConnectionsError` once its connections are in use; at
an LLM stage's concurrency that error would read as "Redis is down" to the rate limiter.
A blocking pool makes callers wait for a free connection instead.
"""

from __future__ import annotations

from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis


def redis_client(url: SecretStr | str, max_connections: int = 64, timeout_s: float = 5.0) -> Redis:
    """A Redis client over a blocking pool of at most `max_connections` connections.

    Closing it (`await client.aclose()`) also disconnects its pool.
    """
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    pool = BlockingConnectionPool.from_url(raw, max_connections=max_connections, timeout=timeout_s)
    return Redis(connection_pool=pool, auto_close_connection_pool=True)
