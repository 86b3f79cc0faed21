"""job states and claims: stalls, progress times, learn claims, the job event outbox

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A stall is a visible job state: since when nothing finished, and why.
    op.add_column("jobs", sa.Column("stalled_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("stall_reason", sa.Text(), nullable=True))
    # When each review finished theming: how the report stage sees a job progress. now() is
    # evaluated once here, so existing rows get the migration's time (no table rewrite).
    op.add_column(
        "review_themed",
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.drop_index("ix_review_themed_job", table_name="review_themed")
    op.create_index("ix_review_themed_job", "review_themed", ["job_id", "created_at"])
    # A learn leader's claim on held batches it is releasing.
    op.add_column(
        "learn_pending", sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "job_events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("produced_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_job_events_unproduced",
        "job_events",
        ["seq"],
        postgresql_where=sa.text("produced_at IS NULL"),
    )
    op.create_index("ix_job_events_job", "job_events", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_job_events_job", table_name="job_events")
    op.drop_index("ix_job_events_unproduced", table_name="job_events")
    op.drop_table("job_events")
    op.drop_column("learn_pending", "claimed_until")
    op.drop_index("ix_review_themed_job", table_name="review_themed")
    op.create_index("ix_review_themed_job", "review_themed", ["job_id"])
    op.drop_column("review_themed", "created_at")
    op.drop_column("jobs", "stall_reason")
    op.drop_column("jobs", "stalled_since")
