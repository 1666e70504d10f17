"""Indexes for retention and history pages: predictions by (timestamp, id) and by
(model, version), comparisons by timestamp, alerts by raised_at.

On a large existing store the upgrade builds them once (SQLite, 10M predictions on 2 shared
cores: ~7.5 s per index, bench.retention); PostgreSQL holds writes to the table meanwhile.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_predictions_timestamp", "predictions", ["timestamp", "id"])
    op.create_index("ix_predictions_model_version", "predictions", ["model", "version"])
    op.create_index("ix_model_comparisons_timestamp", "model_comparisons", ["timestamp"])
    op.create_index("ix_alerts_raised_at", "alerts", ["raised_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_raised_at", table_name="alerts")
    op.drop_index("ix_model_comparisons_timestamp", table_name="model_comparisons")
    op.drop_index("ix_predictions_model_version", table_name="predictions")
    op.drop_index("ix_predictions_timestamp", table_name="predictions")
