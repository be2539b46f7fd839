"""Values in and out of the label store: callers never see ORM objects.

All boxes the store takes and returns are in the ``world`` frame (see :mod:`calibration.boxes` for
the box convention); ``Boxes3D`` velocity rows are NaN where unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from numbers import Integral
from types import MappingProxyType

import numpy as np

from autolabel.categories import Category
from autolabel.store.review import ReviewState
from calibration import SE3, WORLD_FRAME, Box3D, Boxes3D, InputError

MAX_KEY_CHARS = 128


class BoxStage(str, Enum):
    """Which stage produced a box revision (values match ``tracking.BoxSource`` for the first three)."""

    DETECTED = "detected"  # a detection associated to the track in that frame
    INTERPOLATED = "interpolated"  # filled in a gap by the tracker
    REFINED = "refined"  # set by a refinement stage (static box, smoothed path)
    HUMAN = "human"  # drawn, moved or deleted by a person in the viewer


PIPELINE_STAGES = frozenset({BoxStage.DETECTED, BoxStage.INTERPOLATED, BoxStage.REFINED})


class RunStatus(str, Enum):
    """A pipeline run is written in one transaction, so a visible run is always complete."""

    CURRENT = "current"  # the clip's latest run: its boxes are the prelabels of untouched tracks
    SUPERSEDED = "superseded"  # a later run of the same clip replaced its prelabels


class AuditAction(str, Enum):
    CLIP_CREATED = "clip_created"
    PRELABELS_WRITTEN = "prelabels_written"
    BOX_EDITED = "box_edited"
    BOX_DELETED = "box_deleted"
    TRACK_ADDED = "track_added"
    TRACK_CATEGORY_SET = "track_category_set"
    REVIEW_STATE_CHANGED = "review_state_changed"


def _check_key(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_KEY_CHARS:
        raise InputError(f"{what} must be a non-empty string of at most {MAX_KEY_CHARS} characters, got {value!r}")
    return value


def _plain(value: str) -> str:
    return str(value.value) if isinstance(value, Enum) else str(value)


def parse_category(value: Category | str, what: str) -> Category:
    try:
        return Category(value)
    except ValueError:
        raise InputError(f"{what}: unknown category {value!r} (one of {[c.value for c in Category]})") from None


def check_author(author: str) -> str:
    """Every human write names its author."""
    if not isinstance(author, str) or not author.strip():
        raise InputError(f"author must be a non-empty string, got {author!r}")
    return author


@dataclass(frozen=True)
class ClipKey:
    """Identifies a clip: its source (``ClipSource`` value) and its name in that source."""

    source: str
    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", _check_key(_plain(self.source), "clip source"))
        object.__setattr__(self, "name", _check_key(self.name, "clip name"))

    def __str__(self) -> str:
        return f"{self.source}/{self.name}"


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """One keyframe as the store keeps it: position, source token, time and ego pose."""

    index: int
    token: str
    timestamp_us: int
    world_SE3_ego: SE3 | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", int(self.index))
        object.__setattr__(self, "timestamp_us", int(self.timestamp_us))
        object.__setattr__(self, "token", str(self.token))

    def same_identity(self, other: FrameRecord) -> bool:
        """Same index, token and timestamp (the pose may be re-estimated)."""
        return (self.index, self.token, self.timestamp_us) == (other.index, other.token, other.timestamp_us)


def check_frames(frames: Sequence[FrameRecord], what: str) -> tuple[FrameRecord, ...]:
    """Frames must be indexed 0..N-1 in order with strictly increasing timestamps."""
    frames = tuple(frames)
    if not frames:
        raise InputError(f"{what}: no frames")
    for position, frame in enumerate(frames):
        if frame.index != position:
            raise InputError(f"{what}: frame at position {position} has index {frame.index} (expected 0..N-1 in order)")
        if position and frame.timestamp_us <= frames[position - 1].timestamp_us:
            raise InputError(f"{what}: frame {position} timestamp_us is not after frame {position - 1}'s")
    return frames


@dataclass(frozen=True)
class Provenance:
    """Who made a pipeline run's labels: detector, hash of all stage parameters, code version."""

    detector: str
    parameters_hash: str
    code_version: str
    author: str = "pipeline"

    def __post_init__(self) -> None:
        for name in ("detector", "parameters_hash", "code_version", "author"):
            _check_key(getattr(self, name), f"provenance {name}")


def _frozen(values: object, dtype: type, shape: tuple[int, ...], what: str) -> np.ndarray:
    array = np.array(values, dtype=dtype, copy=True)
    if array.shape != shape:
        raise InputError(f"{what} must have shape {shape}, got {array.shape}")
    array.setflags(write=False)
    return array


def check_review_flags(flags: Mapping[str, int], what: str) -> Mapping[str, int]:
    """A read-only copy of flag -> box count, sorted by flag, without zero counts."""
    out = {}
    for flag, count in sorted(dict(flags).items()):
        _check_key(flag, f"{what}: review flag")
        if isinstance(count, bool) or not isinstance(count, Integral) or count < 0:
            raise InputError(f"{what}: review flag {flag!r} count must be a non-negative integer, got {count!r}")
        if count:
            out[flag] = int(count)
    return MappingProxyType(out)


def flagged_boxes(flags: Mapping[str, int]) -> int:
    """How many flags a track's boxes carry in all (the review queue's first ordering key)."""
    return sum(flags.values())


@dataclass(frozen=True, eq=False)
class TrackLabels:
    """One pipeline track to store: K boxes in the world frame.

    Attributes:
        track_key: the pipeline's id of the track, unique in the clip.
        category: the track's class.
        score: track-level confidence.
        frame_indices: (K,) int64 strictly increasing clip frame indices.
        boxes: K boxes in ``world``; optional (K, 2) velocity (NaN where unknown).
        scores: (K,) per-box confidence.
        stages: K pipeline stages (``detected``, ``interpolated``, ``refined``; not ``human``).
        confidences: optional (K,) label confidence (e.g. from refinement), NaN where not estimated.
        static: the object does not move (one world box).
        fixed_size_lwh: the track's refined size ``(l, w, h)`` in metres, if fixed.
        review_flags: review flag (e.g. a camera cross-check's ``free_space_conflict``) -> number of the
            track's boxes carrying it; empty when nothing was flagged.
    """

    track_key: str
    category: Category
    score: float
    frame_indices: np.ndarray
    boxes: Boxes3D
    scores: np.ndarray
    stages: tuple[BoxStage, ...]
    confidences: np.ndarray | None = None
    static: bool = False
    fixed_size_lwh: tuple[float, float, float] | None = None
    review_flags: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        what = f"track {self.track_key!r}"
        object.__setattr__(self, "review_flags", check_review_flags(self.review_flags, what))
        _check_key(self.track_key, "track key")
        object.__setattr__(self, "category", parse_category(self.category, what))
        if not np.isfinite(self.score):
            raise InputError(f"{what}: score must be finite")
        object.__setattr__(self, "score", float(self.score))
        if self.boxes.frame != WORLD_FRAME:
            raise InputError(f"{what}: boxes must be in the {WORLD_FRAME!r} frame, got {self.boxes.frame!r}")
        k = len(self.boxes)
        if k == 0:
            raise InputError(f"{what}: no boxes")
        frames = _frozen(self.frame_indices, np.int64, (k,), f"{what} frame_indices")
        if np.any(np.diff(frames) <= 0) or frames[0] < 0:
            raise InputError(f"{what}: frame_indices must be non-negative and strictly increasing")
        object.__setattr__(self, "frame_indices", frames)
        scores = _frozen(self.scores, np.float64, (k,), f"{what} scores")
        if not np.all(np.isfinite(scores)):
            raise InputError(f"{what}: scores must be finite")
        object.__setattr__(self, "scores", scores)
        if self.confidences is not None:
            object.__setattr__(self, "confidences", _frozen(self.confidences, np.float64, (k,), f"{what} confidences"))
        try:
            stages = tuple(BoxStage(s) for s in self.stages)
        except ValueError as error:
            raise InputError(f"{what}: {error}") from None
        if len(stages) != k or not set(stages) <= PIPELINE_STAGES:
            raise InputError(f"{what}: needs {k} stages, each one of {sorted(s.value for s in PIPELINE_STAGES)}")
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "static", bool(self.static))
        if self.fixed_size_lwh is not None:
            size = tuple(float(v) for v in self.fixed_size_lwh)
            if len(size) != 3 or not all(np.isfinite(size)) or min(size) < 0:
                raise InputError(f"{what}: fixed_size_lwh must be 3 finite non-negative numbers")
            object.__setattr__(self, "fixed_size_lwh", size)

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class TrackInfo:
    """A track's current attributes; ``num_boxes`` counts its current (not deleted) boxes.

    ``review_flags`` are those of the pipeline run that last wrote the track (flag -> number of boxes;
    empty when nothing was flagged); human edits keep them.
    """

    track_key: str
    category: Category
    score: float
    review_state: ReviewState
    static: bool
    fixed_size_lwh: tuple[float, float, float] | None
    human_touched: bool
    num_boxes: int
    review_flags: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "review_flags", check_review_flags(self.review_flags, f"track {self.track_key!r}"))


@dataclass(frozen=True)
class ClipInfo:
    """A clip's state and counts: live tracks (with a current box), current boxes, runs."""

    key: ClipKey
    root: str
    review_state: ReviewState
    num_frames: int
    num_tracks: int
    num_boxes: int
    num_runs: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RunInfo:
    run_id: int
    clip: ClipKey
    provenance: Provenance
    status: RunStatus
    started_at: datetime
    finished_at: datetime
    num_tracks: int
    num_boxes: int


@dataclass(frozen=True)
class PrelabelResult:
    """What :meth:`LabelStore.write_prelabels` did.

    Attributes:
        run_id: the new run.
        written: keys of the tracks whose boxes this run now sets (in input order, after renames).
        retired: keys of untouched tracks of earlier runs absent from this run (their boxes deleted).
        kept: keys of human-touched tracks left exactly as they were.
        skipped: input keys dropped as duplicates of a kept track (they overlap it).
        renamed: input key -> stored key, for input tracks whose key belongs to a kept track.
    """

    run_id: int
    written: tuple[str, ...]
    retired: tuple[str, ...]
    kept: tuple[str, ...]
    skipped: tuple[str, ...]
    renamed: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "renamed", MappingProxyType(dict(self.renamed)))


@dataclass(frozen=True)
class BoxRevision:
    """One immutable revision of a track's box in one frame.

    ``box`` is the box of that revision; a deletion revision repeats the deleted geometry.
    ``run_id`` and ``provenance`` are set for pipeline revisions, ``None`` for human ones.
    """

    track_key: str
    frame_index: int
    revision: int
    box: Box3D
    score: float
    confidence: float | None
    stage: BoxStage
    deleted: bool
    author: str
    created_at: datetime
    run_id: int | None
    provenance: Provenance | None


@dataclass(frozen=True, eq=False)
class FrameBoxes:
    """The current boxes of one frame, one row per track present in it (ordered by track key).

    Attributes:
        boxes: N boxes in ``world``; (N, 2) velocity, NaN where unknown, or ``None`` when all unknown.
        scores: (N,) box scores.
        revisions: (N,) int64 revision numbers of the current boxes.
    """

    frame_index: int
    timestamp_us: int
    boxes: Boxes3D
    track_keys: tuple[str, ...]
    categories: tuple[Category, ...]
    scores: np.ndarray
    stages: tuple[BoxStage, ...]
    revisions: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True, eq=False)
class TrackBoxes:
    """The current boxes of one track: K frames in increasing order.

    Attributes:
        frame_indices: (K,) int64.
        boxes: K boxes in ``world`` (velocity as in :class:`FrameBoxes`).
        scores: (K,); revisions: (K,) int64.
    """

    track: TrackInfo
    frame_indices: np.ndarray
    boxes: Boxes3D
    scores: np.ndarray
    stages: tuple[BoxStage, ...]
    revisions: np.ndarray


@dataclass(frozen=True, eq=False)
class ClipLabels:
    """The current labels of a clip: per frame and per live track (a track with a current box)."""

    clip: ClipInfo
    frames: tuple[FrameRecord, ...]
    tracks: tuple[TrackInfo, ...]
    frame_boxes: tuple[FrameBoxes, ...]

    def track(self, track_key: str) -> TrackInfo:
        for info in self.tracks:
            if info.track_key == track_key:
                return info
        raise InputError(f"clip {self.clip.key}: no live track {track_key!r}")

    def track_boxes(self, track_key: str) -> TrackBoxes:
        """The per-track view of :attr:`frame_boxes`."""
        info = self.track(track_key)
        hits = [(fb, fb.track_keys.index(track_key)) for fb in self.frame_boxes if track_key in fb.track_keys]
        return TrackBoxes(
            track=info,
            frame_indices=np.array([fb.frame_index for fb, _ in hits], dtype=np.int64),
            boxes=Boxes3D.concatenate([fb.boxes[[i]] for fb, i in hits], WORLD_FRAME),
            scores=np.array([fb.scores[i] for fb, i in hits], dtype=np.float64),
            stages=tuple(fb.stages[i] for fb, i in hits),
            revisions=np.array([fb.revisions[i] for fb, i in hits], dtype=np.int64),
        )


@dataclass(frozen=True)
class AuditEntry:
    """One audit event; ``details`` holds action-specific facts (states, revisions, run counts)."""

    event_id: int
    created_at: datetime
    actor: str
    action: AuditAction
    clip: ClipKey
    track_key: str | None
    frame_index: int | None
    revision: int | None
    run_id: int | None
    details: Mapping[str, object]

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))
