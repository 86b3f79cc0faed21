"""insight quote translation and the client's review id

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00.000000

A quote is stored in the review's own language with its translation into the job's target
language beside it (`quote_translation`, NULL when the review is in that language), and
every insight carries the `review_id` the client uploaded (`external_review_id`) next to
the internal one, so results can be joined to the client's own data.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("insights", sa.Column("quote_translation", sa.Text(), nullable=True))
    op.add_column("insights", sa.Column("external_review_id", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("insights", "external_review_id")
    op.drop_column("insights", "quote_translation")
