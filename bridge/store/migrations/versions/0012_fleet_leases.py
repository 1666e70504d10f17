"""Fleets: members and asset leases, and the fencing token (the lease generation) on
predictions and outbox rows. Plain ADD COLUMN of nullable columns: no table copy."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("predictions", sa.Column("fence", sa.BigInteger(), nullable=True))
    op.add_column("outbox", sa.Column("fence", sa.BigInteger(), nullable=True))
    op.create_table(
        "fleet_members",
        sa.Column("gateway_id", sa.String(200), primary_key=True),
        sa.Column("boot_id", sa.String(40), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("heartbeat_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("assets", sa.Integer(), nullable=False),
    )
    op.create_table(
        "fleet_leases",
        sa.Column("asset", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=False),
        sa.Column("taken_at", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("fleet_leases")
    op.drop_table("fleet_members")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("fence")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("fence")
