"""Operator feedback (labels with who/when), prediction lineage (mapping revision),
explanations and drift scores on predictions, and details of drift alerts."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prediction_labels",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(36), nullable=False),
        sa.Column("asset", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        # acknowledge | confirm | reject
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("key_id", sa.String(12), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("prediction_time", sa.Double(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
    )
    op.create_index("ix_prediction_labels_prediction", "prediction_labels", ["prediction_id"])
    op.create_index("ix_prediction_labels_ptime", "prediction_labels", ["prediction_time"])
    op.add_column("predictions", sa.Column("mapping_revision", sa.String(64), nullable=True))
    op.add_column("predictions", sa.Column("explanation_json", sa.Text(), nullable=True))
    op.add_column("predictions", sa.Column("drift_score", sa.Double(), nullable=True))
    op.add_column("alerts", sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("detail")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("drift_score")
        batch.drop_column("explanation_json")
        batch.drop_column("mapping_revision")
    op.drop_index("ix_prediction_labels_ptime", table_name="prediction_labels")
    op.drop_index("ix_prediction_labels_prediction", table_name="prediction_labels")
    op.drop_table("prediction_labels")
