"""The batched-upsert helper builds 20-row INSERT .. ON CONFLICT .. DO UPDATE statements."""

from __future__ import annotations

from shared.db.models import DeadLetter, Review, Translation
from shared.db.upsert import BATCH_ROWS, Upsert, chunks, dedupe_last


def test_statement_has_one_values_group_per_row_and_conflict_clause() -> None:
    spec = Upsert(Translation.__table__, key=("review_id",))  # type: ignore[arg-type]
    sql = spec.sql(3)
    assert sql.startswith('INSERT INTO "translations" (')
    assert "($1,$2,$3,$4,$5,$6),($7,$8,$9,$10,$11,$12),($13,$14,$15,$16,$17,$18)" in sql
    assert "%s" not in sql
    assert 'ON CONFLICT ("review_id") DO UPDATE SET' in sql
    assert '"text" = EXCLUDED."text"' in sql
    assert '"review_id" = EXCLUDED' not in sql


def test_server_defaulted_columns_are_left_to_postgres() -> None:
    spec = Upsert(DeadLetter.__table__, key=("id",))  # type: ignore[arg-type]
    assert "created_at" not in spec.columns
    assert "redriven_at" in spec.columns


def test_update_subset_keeps_first_values_and_returning() -> None:
    spec = Upsert(
        Review.__table__,  # type: ignore[arg-type]
        key=("id",),
        update=("text",),
        returning=("id", "origin"),
    )
    sql = spec.sql(1)
    assert '"origin" = EXCLUDED' not in sql
    assert sql.endswith("RETURNING id, origin")


def test_empty_update_still_returns_existing_rows() -> None:
    spec = Upsert(Review.__table__, key=("id",), update=())  # type: ignore[arg-type]
    assert 'DO UPDATE SET "id" = EXCLUDED."id"' in spec.sql(2)


def test_rows_are_split_in_batches_of_twenty() -> None:
    rows = [{"i": i} for i in range(45)]
    sizes = [len(c) for c in chunks(rows)]
    assert BATCH_ROWS == 20
    assert sizes == [20, 20, 5]


def test_duplicate_keys_in_one_batch_keep_the_last_row() -> None:
    rows = [{"id": "a", "v": 1}, {"id": "b", "v": 2}, {"id": "a", "v": 3}]
    assert dedupe_last(rows, ("id",)) == [{"id": "a", "v": 3}, {"id": "b", "v": 2}]


def test_json_columns_are_wrapped() -> None:
    from psycopg.types.json import Jsonb

    from shared.db.models import JobModel

    spec = Upsert(JobModel.__table__, key=("job_id",))  # type: ignore[arg-type]
    params = spec.params(
        [
            {
                "job_id": "j",
                "dimensions": [{"name": "x"}],
                "five_w": {},
                "sample_size": 1,
                "model": "m",
            }
        ]
    )
    assert isinstance(params[spec.columns.index("dimensions")], Jsonb)
