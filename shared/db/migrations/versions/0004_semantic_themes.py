"""semantic themes: theme state, merges, and indexes for the result endpoints

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("themes", sa.Column("seq", sa.Integer(), server_default="0", nullable=False))
    op.add_column(
        "themes", sa.Column("opened_at", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("themes", sa.Column("size", sa.Integer(), server_default="0", nullable=False))
    op.add_column("themes", sa.Column("centroid", sa.LargeBinary(), nullable=True))
    op.add_column(
        "themes",
        sa.Column(
            "sample",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="{}",
            nullable=False,
        ),
    )
    op.create_table(
        "theme_merges",
        sa.Column("theme_id", sa.String(length=36), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("into_id", sa.String(length=36), nullable=False),
        sa.Column("at_insight", sa.Integer(), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("theme_id"),
    )
    op.create_index("ix_theme_merges_job", "theme_merges", ["job_id"], unique=False)
    op.create_table(
        "theme_jobs",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("placed", sa.Integer(), nullable=False),
        sa.Column("opened", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index("ix_insights_job_id", "insights", ["job_id", "id"], unique=False)
    op.create_index(
        "ix_insights_job_review", "insights", ["job_id", "review_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_insights_job_review", table_name="insights")
    op.drop_index("ix_insights_job_id", table_name="insights")
    op.drop_table("theme_jobs")
    op.drop_index("ix_theme_merges_job", table_name="theme_merges")
    op.drop_table("theme_merges")
    op.drop_column("themes", "sample")
    op.drop_column("themes", "centroid")
    op.drop_column("themes", "size")
    op.drop_column("themes", "opened_at")
    op.drop_column("themes", "seq")
