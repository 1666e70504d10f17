"""Outbox leases: a relay marks the rows it sends (``claimed_by``, ``lease_until``) and commits,
instead of holding ``FOR UPDATE`` locks in a transaction open for the whole round. Rows that an
older gateway noted as accepted (``outbox_accepted``) were delivered: they are deleted here."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (with a default) on SQLite too: no copy of a possibly large outbox.
    op.add_column(
        "outbox", sa.Column("claimed_by", sa.String(200), nullable=False, server_default="")
    )
    op.add_column(
        "outbox", sa.Column("lease_until", sa.Double(), nullable=False, server_default="0")
    )
    op.execute("DELETE FROM outbox WHERE id IN (SELECT row_id FROM outbox_accepted)")
    op.execute("DELETE FROM outbox_accepted")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("claimed_by")
