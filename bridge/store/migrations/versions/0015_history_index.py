"""Predictions by (asset, model, timestamp, id): the keyset pages of the HMI server's HistoryRead
(``bridge.store.hmihistory``) read one asset+model's values in (timestamp, id) order.

With ``ix_predictions_asset_timestamp`` alone a page also visits the asset's other models'
rows and PostgreSQL sorts each instant's rows by id (an incremental sort); here it seeks to the
cursor and reads the page in index order (``python -m bench.opcua_history``). The cost is one
more index entry per stored prediction.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_predictions_asset_model_timestamp", "predictions", ["asset", "model", "timestamp", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_predictions_asset_model_timestamp", table_name="predictions")
