"""Index of shadow/canary comparisons by prediction id: operator labels are joined to them to
measure the accuracy of the active and the candidate version."""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_model_comparisons_prediction", "model_comparisons", ["prediction_id"])


def downgrade() -> None:
    op.drop_index("ix_model_comparisons_prediction", table_name="model_comparisons")
