"""jobs.edge: a split job holds its edge board too, so no other job runs there meanwhile

Revision ID: 0003_job_edge
Revises: 0002_job_board
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_job_edge"
down_revision = "0002_job_board"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("edge", sa.String(length=256), nullable=True))
        batch_op.create_index("ix_jobs_edge_status", ["edge", "status"], unique=False)
    # jobs already queued by an older version: their edge is in the payload (split jobs only)
    jobs = sa.table("jobs", sa.column("id", sa.Integer), sa.column("payload", sa.JSON), sa.column("edge", sa.String))
    bind = op.get_bind()
    for job_id, payload in bind.execute(sa.select(jobs.c.id, jobs.c.payload)).all():
        edge = payload.get("edge") if isinstance(payload, dict) else None
        if edge:
            bind.execute(sa.update(jobs).where(jobs.c.id == job_id).values(edge=edge))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_edge_status")
        batch_op.drop_column("edge")
