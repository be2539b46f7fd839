"""Tracks get ``review_flags``: review flag -> number of the track's boxes with it (``{}`` when none).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07

Existing tracks get ``{}`` (nothing flagged) from the server default. Batch mode keeps it portable: SQLite
gets a table copy where its ``ALTER TABLE`` falls short (the downgrade's drop), Postgres plain ``ALTER TABLE``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        batch.add_column(sa.Column("review_flags", sa.JSON(), nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        batch.drop_column("review_flags")
