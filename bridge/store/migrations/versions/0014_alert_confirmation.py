"""Alerts get Part 9's confirmation, the operator's step after the acknowledgement: when, by
whom, with what comment (the HMI alarm's Confirm method). Nullable columns: no table rewrite."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("confirmed_at", sa.Double(), nullable=True))
    op.add_column("alerts", sa.Column("confirmed_by", sa.String(200), nullable=True))
    op.add_column("alerts", sa.Column("confirm_comment", sa.Text(), nullable=True))


def downgrade() -> None:
    # SQLite drops columns by copying the table: batch mode does that on both dialects.
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("confirm_comment")
        batch.drop_column("confirmed_by")
        batch.drop_column("confirmed_at")
