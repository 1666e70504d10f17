"""API keys (hashed) and alerts (raised by the alert rule, acknowledged through the API)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key_id", sa.String(12), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(36), nullable=False, unique=True),
        sa.Column("asset", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("previous", sa.String(200), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("raised_at", sa.Double(), nullable=False),
        sa.Column("acked_at", sa.Double(), nullable=True),
        sa.Column("acked_by", sa.String(200), nullable=True),
        sa.Column("acked_key", sa.String(12), nullable=True),
        sa.Column("ack_comment", sa.Text(), nullable=True),
    )
    op.create_index("ix_alerts_asset_raised", "alerts", ["asset", "raised_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_asset_raised", table_name="alerts")
    op.drop_table("alerts")
    op.drop_table("api_keys")
