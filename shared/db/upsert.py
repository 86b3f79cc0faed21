"""The one batched-upsert helper every service writes Postgres with.

Rows go in statements of `BATCH_ROWS` (20) rows each, `INSERT .. ON CONFLICT (key) DO
UPDATE`, so replaying an event rewrites the same rows and never adds a second one. The SQL
text is derived from the SQLAlchemy table once per (table, batch size) and sent through
psycopg's pipeline mode: all of a batch's statements go out in one round trip, which is
what lets ingest keep up with tens of thousands of rows per second on two cores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import JSONB

BATCH_ROWS = 20


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Upsert:
    """How to upsert into one table: which columns, which key, what to update on conflict.

    `update` names the columns a conflict overwrites (default: every non-key column);
    an empty tuple turns the upsert into `DO UPDATE SET key = key` so `RETURNING` still
    yields the existing row. `returning` columns come back from `execute`.
    """

    table: Table
    key: tuple[str, ...]
    columns: tuple[str, ...] = ()
    update: tuple[str, ...] | None = None
    returning: tuple[str, ...] = ()
    _json_cols: frozenset[str] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        cols = self.columns or tuple(
            c.name for c in self.table.columns if c.server_default is None or c.name in self.key
        )
        object.__setattr__(self, "columns", cols)
        json_cols = frozenset(
            c.name for c in self.table.columns if isinstance(c.type, JSONB) and c.name in cols
        )
        object.__setattr__(self, "_json_cols", json_cols)

    def sql(self, n_rows: int) -> str:
        """The statement text for `n_rows` rows (cached per size)."""
        return _build_sql(self, n_rows)

    def params(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Flatten rows into positional parameters, wrapping JSON columns."""
        out: list[Any] = []
        cols = self.columns
        json_cols = self._json_cols
        if not json_cols:  # the common case, and the hot path of ingest
            for row in rows:
                out.extend(map(row.get, cols))
            return out
        for row in rows:
            for c in cols:
                v = row.get(c)
                out.append(Jsonb(v) if c in json_cols and v is not None else v)
        return out


@lru_cache(maxsize=256)
def _statement(spec: Upsert, n_rows: int) -> bytes:
    """The statement as bytes: psycopg would otherwise encode the text on every execute."""
    return _build_sql(spec, n_rows).encode()


@lru_cache(maxsize=256)
def _build_sql(spec: Upsert, n_rows: int) -> str:
    cols = spec.columns
    width = len(cols)
    # `$n` placeholders, run by a raw cursor: psycopg caches its %s-to-$n conversion only
    # for statements of <= 50 parameters, and a 20-row statement has hundreds, so with %s
    # every execute re-parsed the whole text (a quarter of ingest's CPU time).
    values = ",".join(
        "(" + ",".join(f"${r * width + c + 1}" for c in range(width)) + ")" for r in range(n_rows)
    )
    update = spec.update if spec.update is not None else tuple(c for c in cols if c not in spec.key)
    if update:
        set_clause = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in update)
    else:
        set_clause = f"{_q(spec.key[0])} = EXCLUDED.{_q(spec.key[0])}"
    sql = (
        f"INSERT INTO {_q(spec.table.name)} ({','.join(_q(c) for c in cols)}) VALUES "
        + values
        + f" ON CONFLICT ({','.join(_q(k) for k in spec.key)}) DO UPDATE SET {set_clause}"
    )
    if spec.returning:
        sql += " RETURNING " + ", ".join(spec.returning)
    return sql


def chunks(rows: Sequence[Mapping[str, Any]], size: int = BATCH_ROWS) -> Iterable[Sequence[Any]]:
    """Split rows into consecutive slices of at most `size`."""
    for i in range(0, len(rows), size):
        yield rows[i : i + size]


def dedupe_last(rows: Sequence[Mapping[str, Any]], key: tuple[str, ...]) -> list[Mapping[str, Any]]:
    """Keep the last row per key: Postgres refuses one statement touching a row twice."""
    if len(key) == 1:
        k = key[0]
        return list({row[k]: row for row in rows}.values())
    seen: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    for row in rows:
        seen[tuple(row[k] for k in key)] = row
    return list(seen.values())


async def upsert(
    conn: psycopg.AsyncConnection[Any], spec: Upsert, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """Upsert `rows` in statements of 20, pipelined; returns the RETURNING rows in order.

    Runs inside the caller's transaction (the caller commits), so a batch's tables change
    together or not at all.
    """
    rows = dedupe_last(rows, spec.key) if len(rows) > 1 else list(rows)
    if not rows:
        return []
    results: list[tuple[Any, ...]] = []
    async with conn.pipeline():
        cursors: list[psycopg.AsyncRawCursor[Any]] = []
        for part in chunks(rows):
            cur = psycopg.AsyncRawCursor(conn)
            await cur.execute(_statement(spec, len(part)), spec.params(part), prepare=True)
            cursors.append(cur)
    if spec.returning:
        for cur in cursors:
            results.extend(await cur.fetchall())
    return results
