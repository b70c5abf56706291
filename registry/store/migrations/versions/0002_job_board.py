"""jobs.board: a board runs one job at a time across all controllers

Revision ID: 0002_job_board
Revises: 0001_initial
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_job_board"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("board", sa.String(length=256), nullable=True))
        batch_op.create_index("ix_jobs_board_status", ["board", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_board_status")
        batch_op.drop_column("board")
