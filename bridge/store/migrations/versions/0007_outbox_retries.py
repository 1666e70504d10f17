"""Outbox retry caps and accepted-row notes: a retryable failure is counted per event (and
dead-lettered after a cap), and an accepted event is recorded as its reply arrives."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("outbox", sa.Column("retries", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "outbox", sa.Column("first_failed_at", sa.Double(), nullable=False, server_default="0")
    )
    op.create_table(
        "outbox_accepted",
        sa.Column("row_id", _ID, primary_key=True, autoincrement=False),
        sa.Column("destination", sa.String(200), nullable=False),
        sa.Column("accepted_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("outbox_accepted")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("first_failed_at")
        batch.drop_column("retries")
