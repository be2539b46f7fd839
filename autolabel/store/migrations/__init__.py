"""Alembic environment and scripts of the label store (a package so that wheels ship them)."""
