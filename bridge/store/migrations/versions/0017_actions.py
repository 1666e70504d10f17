"""Write-back actions: ``action_state`` (one row per action: armed, fallen back, faulted, its
last write; kept across restarts) and ``action_events`` (every decision that was not
``hold``, with what was written and read back and why). New tables only: no table copy."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "action_state",
        sa.Column("action", sa.String(200), primary_key=True),
        sa.Column("asset", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("definition", sa.String(64), nullable=False),
        sa.Column("armed_version", sa.String(100), nullable=True),
        sa.Column("armed_by", sa.String(200), nullable=True),
        sa.Column("armed_at", sa.Double(), nullable=True),
        sa.Column("fallback", sa.Text(), nullable=True),
        sa.Column("fault", sa.Text(), nullable=True),
        sa.Column("faulted_at", sa.Double(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("last_value", sa.Text(), nullable=True),
        sa.Column("last_time", sa.Double(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
    )
    op.create_table(
        "action_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False, unique=True),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("gateway", sa.String(200), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("asset", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("requested", sa.Text(), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("read_back", sa.Text(), nullable=True),
        sa.Column("prediction_id", sa.String(36), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("model_version", sa.String(100), nullable=True),
        sa.Column("lineage", sa.Text(), nullable=True),
        sa.Column("interlocks", sa.Text(), nullable=False),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
    )
    op.create_index("ix_action_events_action_at", "action_events", ["action", "at"])
    op.create_index("ix_action_events_at", "action_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_action_events_at", table_name="action_events")
    op.drop_index("ix_action_events_action_at", table_name="action_events")
    op.drop_table("action_events")
    op.drop_table("action_state")
