"""Predictions made after the fact for a past time (a model's ``backfill: {predictions:
true}`` over an outage gap filled from the server's history) are flagged ``historical``.
Plain ADD COLUMN with a server default: existing rows are live ones, no table copy."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "predictions",
        sa.Column("historical", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("historical")
