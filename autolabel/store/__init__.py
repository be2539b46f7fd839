"""Label store: clips, frames, tracks and per-frame boxes with provenance, revisions, review and audit.

SQLite file in the workspace by default, Postgres by ``AUTOLABEL_DATABASE_URL``; schema migrations
with Alembic (:mod:`autolabel.store.migrate`). Callers use :func:`open_store` and the frozen
dataclasses of :mod:`autolabel.store.types`, never the ORM rows of :mod:`autolabel.store.models`.
"""

from autolabel.store.migrate import head_revision, run_migrations
from autolabel.store.prelabels import find_duplicates
from autolabel.store.review import ReviewState, ReviewTarget, allowed_transitions
from autolabel.store.store import LabelStore, open_store
from autolabel.store.types import (
    AuditAction,
    AuditEntry,
    BoxRevision,
    BoxStage,
    ClipInfo,
    ClipKey,
    ClipLabels,
    FrameBoxes,
    FrameRecord,
    PrelabelResult,
    Provenance,
    RunInfo,
    RunStatus,
    TrackBoxes,
    TrackInfo,
    TrackLabels,
)

__all__ = [
    "AuditAction",
    "AuditEntry",
    "BoxRevision",
    "BoxStage",
    "ClipInfo",
    "ClipKey",
    "ClipLabels",
    "FrameBoxes",
    "FrameRecord",
    "LabelStore",
    "PrelabelResult",
    "Provenance",
    "ReviewState",
    "ReviewTarget",
    "RunInfo",
    "RunStatus",
    "TrackBoxes",
    "TrackInfo",
    "TrackLabels",
    "allowed_transitions",
    "find_duplicates",
    "head_revision",
    "open_store",
    "run_migrations",
]
