"""The highest committed sequence number per gateway, asset and model, so numbering goes on
across restarts. Empty after the upgrade: the first start of each gateway takes the highest
stored ``seq`` of each asset and model instead (bridge.store.sequences)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_sequences",
        sa.Column("gateway_id", sa.String(200), primary_key=True),
        sa.Column("asset", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prediction_sequences")
