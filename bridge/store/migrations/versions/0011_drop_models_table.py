"""Drop ``models``: gateways wrote a row per model load there, nothing ever read it (the model
registry, revision 0004, is where versions live). Downgrade recreates it empty, as 0001 made it."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("models")


def downgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("loaded_at", sa.Double(), nullable=False),
        sa.UniqueConstraint("name", "version", "sha256", name="uq_models_identity"),
    )
