"""Model registry: versions with their state, the audit trail of state changes, and the
candidate-vs-active comparisons of shadow and canary runs."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        # Base64 Ed25519 signature over the file's bytes, when the publisher signed it.
        sa.Column("signature", sa.Text(), nullable=True),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("reference_json", sa.Text(), nullable=True),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("registered_by", sa.String(200), nullable=False),
        sa.Column("registered_at", sa.Double(), nullable=False),
        # registered | active | shadow | canary | retired
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("canary_share", sa.Double(), nullable=True),
        sa.Column("canary_assets_json", sa.Text(), nullable=True),
        # Automatic rollback limits of a canary, e.g. {"max_disagreement": 0.3, "min_samples": 50}.
        sa.Column("guard_json", sa.Text(), nullable=True),
        sa.Column("state_changed_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_model_versions_name_version"),
    )
    op.create_index("ix_model_versions_name_state", "model_versions", ["name", "state"])
    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_model_events_name_id", "model_events", ["name", "id"])
    op.create_table(
        "model_comparisons",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("asset", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),  # shadow | canary
        sa.Column("active_version", sa.String(100), nullable=False),
        sa.Column("candidate_version", sa.String(100), nullable=False),
        # The prediction published for this asset in this tick (the active's in shadow mode).
        sa.Column("prediction_id", sa.String(36), nullable=False),
        sa.Column("active_value", sa.Text(), nullable=True),
        sa.Column("candidate_value", sa.Text(), nullable=True),
        sa.Column("candidate_score", sa.Double(), nullable=True),
        sa.Column("agree", sa.Boolean(), nullable=False),
        sa.Column("timestamp", sa.Double(), nullable=False),
        sa.Column("gateway", sa.String(200), nullable=False),
    )
    op.create_index(
        "ix_model_comparisons_name_cand_asset",
        "model_comparisons",
        ["name", "candidate_version", "asset"],
    )


def downgrade() -> None:
    op.drop_index("ix_model_comparisons_name_cand_asset", table_name="model_comparisons")
    op.drop_table("model_comparisons")
    op.drop_index("ix_model_events_name_id", table_name="model_events")
    op.drop_table("model_events")
    op.drop_index("ix_model_versions_name_state", table_name="model_versions")
    op.drop_table("model_versions")
