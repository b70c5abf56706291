"""measurements.runtime: 128 characters (an imported dataset's device names run to 45)

On PostgreSQL, `predictors import latbench` failed on VARCHAR(32) ("value too long"); SQLite does
not enforce the length, so it had gone unnoticed.

Revision ID: 0004_runtime_width
Revises: 0003_job_edge
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_runtime_width"
down_revision = "0003_job_edge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.alter_column("runtime", existing_type=sa.String(length=32), type_=sa.String(length=128))


def downgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.alter_column("runtime", existing_type=sa.String(length=128), type_=sa.String(length=32))
