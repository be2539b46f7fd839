"""Alembic revisions of the label store schema."""
