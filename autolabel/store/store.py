"""The label store: clips, frames, tracks and per-frame boxes with provenance, revisions, review and audit.

Boxes are immutable revisions. The current box of (track, frame) is its highest revision unless that
revision is a deletion. A human edit or deletion adds a revision (stage ``human``, with author and
time); nothing is ever overwritten, so :meth:`LabelStore.box_history` shows every version.

Every public method is one transaction. :meth:`LabelStore.write_prelabels` writes a whole pipeline
run of a clip in one transaction: a crash (exception, killed process) leaves the previous labels and
runs exactly as they were, and other connections see either the old or the new labels, never a mix.

Pipeline re-runs never discard human work. A track is *human-touched* once a person wrote to it
(edited or deleted a box, set its category, changed its review state, or created it). On a re-run:

- human-touched tracks are kept exactly as they are;
- an input track that overlaps a kept track (BEV IoU >= ``duplicate_iou`` in at least half of their
  shared frames) is skipped as a duplicate: the human version wins;
- an input track whose key belongs to a kept track but does not overlap it is stored under a new
  key ``<key>.r<run_id>`` (reported in :attr:`PrelabelResult.renamed`);
- every other input track replaces the prelabels of the untouched track with the same key by new
  revisions (frames it no longer covers get deletion revisions), or becomes a new track;
- untouched tracks of earlier runs that the new run lacks are retired: their boxes get deletion
  revisions (history keeps them).

A re-run of an ``accepted`` or ``signed_off`` clip is refused like any edit (reopen it first).
Review states and their guards are in :mod:`autolabel.store.review`; every transition and every
write is recorded in the audit log.

Concurrency: writers of one clip are serialized (SQLite ``BEGIN IMMEDIATE``, Postgres row lock on
the clip), so revision numbers never collide; every read is one snapshot (SQLite WAL, Postgres
``REPEATABLE READ``).

Usage::

    store = open_store()  # AUTOLABEL_DATABASE_URL or <AUTOLABEL_HOME>/labels.db, migrated
    store.write_prelabels(ClipKey("nuscenes", "scene-0061"), frames, tracks, provenance)
    store.edit_box(clip_key, "17", frame_index=3, box=box_in_world, author="alice")
    labels = store.current_labels(clip_key, signed_off_only=True)  # for exports of final labels
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from autolabel.categories import Category
from autolabel.settings import Settings
from autolabel.store.acceptance import Acceptance, clip_acceptance
from autolabel.store.engine import create_store_engine, default_database_url, is_sqlite, writer
from autolabel.store.migrate import run_migrations
from autolabel.store.models import AuditRow, BoxRow, ClipRow, FrameRow, RunRow, TrackRow
from autolabel.store.prelabels import (
    DUPLICATE_IOU,
    box_dict,
    box_values,
    check_tracks,
    geometry_of,
    insert_boxes,
    sync_frames,
    write_run,
)
from autolabel.store.queries import (
    BOX_TABLE,
    CURRENT_COLUMNS,
    CurrentColumns,
    check_all_accepted,
    check_frame_index,
    clip_info_from,
    clip_info_of,
    clip_row,
    count_current,
    current_counts_by_track,
    frame_boxes_of,
    latest_box,
    latest_query,
    live_counts,
    load_frames,
    provenance_of,
    revision_of,
    track_info_of,
    track_row,
)
from autolabel.store.review import (
    ReviewState,
    ReviewTarget,
    check_editable,
    check_transition,
    parse_state,
)
from autolabel.store.types import (
    MAX_KEY_CHARS,
    AuditAction,
    AuditEntry,
    BoxRevision,
    BoxStage,
    ClipInfo,
    ClipKey,
    ClipLabels,
    FrameRecord,
    PrelabelResult,
    Provenance,
    RunInfo,
    RunStatus,
    TrackInfo,
    TrackLabels,
    check_author,
    check_frames,
    flagged_boxes,
    parse_category,
)
from calibration import Box3D, InputError

HUMAN_SCORE = 1.0  # score of boxes drawn or edited by a person


def _now() -> datetime:
    return datetime.now(UTC)


def open_store(url: str | None = None, *, settings: Settings | None = None) -> LabelStore:
    """Open (creating if needed) the label store at ``url`` and upgrade its schema to the newest revision.

    Args:
        url: SQLAlchemy URL; ``None`` -> ``AUTOLABEL_DATABASE_URL``, else ``<AUTOLABEL_HOME>/labels.db``.

    Raises:
        InputError: bad URL or missing driver; a database at a schema revision this code does not
            know (written by a newer autolabel).
    """
    engine = create_store_engine(url or default_database_url(settings))
    try:
        run_migrations(engine)
    except BaseException:
        engine.dispose()
        raise
    return LabelStore(engine)


class LabelStore:
    """Typed access to the label store over one engine; every method is one transaction.

    Use :func:`open_store` (it migrates the schema); close with :meth:`close` or a ``with`` block.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Reads see one snapshot across their queries: SQLite's BEGIN gives it, Postgres needs REPEATABLE READ.
        reader = engine if is_sqlite(engine) else engine.execution_options(isolation_level="REPEATABLE READ")
        self._read = sessionmaker(reader, expire_on_commit=False)
        self._write = sessionmaker(writer(engine), expire_on_commit=False)

    @property
    def url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._write() as session, session.begin():
            yield session

    # ----------------------------------------------------------------------------- pipeline writes
    def write_prelabels(
        self,
        clip_key: ClipKey,
        frames: Sequence[FrameRecord],
        tracks: Sequence[TrackLabels],
        provenance: Provenance,
        *,
        root: str = "",
        duplicate_iou: float = DUPLICATE_IOU,
    ) -> PrelabelResult:
        """Store one pipeline run's labels of a clip in one transaction (see the module docstring).

        Args:
            frames: the clip's keyframes; the first run stores them, later runs must pass the same
                (index, token, timestamp) sequence (poses may change).
            tracks: the run's tracks, boxes in the world frame.
            root: the dataset root the clip was read from (kept for the viewer).

        Raises:
            InputError: invalid frames or tracks, frames that differ from the stored ones, or a
                clip that is accepted or signed off (reopen it first).
        """
        started = _now()
        what = f"clip {clip_key}"
        if not 0.0 < duplicate_iou <= 1.0:
            raise InputError(f"{what}: duplicate_iou must be in (0, 1], got {duplicate_iou}")
        frames = check_frames(frames, what)
        tracks = tuple(tracks)
        check_tracks(tracks, len(frames), what)
        with self._writing() as session:
            clip = clip_row(session, clip_key, lock=True, missing_ok=True)
            if clip is None:
                clip = ClipRow(
                    source=clip_key.source,
                    name=clip_key.name,
                    root=str(root),
                    review_state=ReviewState.PRELABELED,
                    created_at=started,
                    updated_at=started,
                )
                session.add(clip)
                session.flush()
                _audit(session, provenance.author, AuditAction.CLIP_CREATED, clip, details={"root": str(root)})
            check_editable(f"{what}: pipeline run", clip.review_state)
            if root:
                clip.root = str(root)
            sync_frames(session, clip, frames, what)
            for run in session.scalars(
                select(RunRow).where(RunRow.clip_id == clip.id, RunRow.status == RunStatus.CURRENT)
            ):
                run.status = RunStatus.SUPERSEDED
            run = RunRow(
                clip_id=clip.id,
                detector=provenance.detector,
                parameters_hash=provenance.parameters_hash,
                code_version=provenance.code_version,
                author=provenance.author,
                status=RunStatus.CURRENT,
                started_at=started,
                finished_at=started,
                num_tracks=0,
                num_boxes=0,
            )
            session.add(run)
            session.flush()
            result = write_run(session, clip, run, tracks, provenance, duplicate_iou)
            run.num_tracks = len(result.written)
            run.finished_at = _now()
            clip.updated_at = run.finished_at
            _audit(
                session,
                provenance.author,
                AuditAction.PRELABELS_WRITTEN,
                clip,
                run_id=run.id,
                details={
                    "detector": provenance.detector,
                    "parameters_hash": provenance.parameters_hash,
                    "code_version": provenance.code_version,
                    "num_tracks": run.num_tracks,
                    "num_boxes": run.num_boxes,
                    "retired": list(result.retired),
                    "kept": list(result.kept),
                    "skipped": list(result.skipped),
                    "renamed": dict(result.renamed),
                },
            )
        return result

    # ----------------------------------------------------------------------------- human writes
    def edit_box(self, clip_key: ClipKey, track_key: str, frame_index: int, box: Box3D, author: str) -> BoxRevision:
        """Set the track's box in a frame (a new ``human`` revision; also adds a box to a new frame).

        ``box`` must be in the world frame; its ``velocity`` ``None`` stores an unknown velocity.
        """
        author = check_author(author)
        what = f"clip {clip_key} track {track_key!r} frame {frame_index}"
        row = box_values(box, what)
        with self._writing() as session:
            clip, track = _editable_track(session, clip_key, track_key, what)
            check_frame_index(session, clip, frame_index, what)
            previous = latest_box(session, track.id, frame_index)
            revision = 1 if previous is None else previous.revision + 1
            return _add_human_revision(session, clip, track, int(frame_index), revision, row, author, deleted=False)

    def delete_box(self, clip_key: ClipKey, track_key: str, frame_index: int, author: str) -> BoxRevision:
        """Delete the track's current box in a frame (a deletion revision repeating the deleted geometry)."""
        author = check_author(author)
        what = f"clip {clip_key} track {track_key!r} frame {frame_index}"
        with self._writing() as session:
            clip, track = _editable_track(session, clip_key, track_key, what)
            previous = latest_box(session, track.id, frame_index)
            if previous is None or previous.deleted:
                raise InputError(f"{what}: no current box to delete")
            geometry = geometry_of(previous)
            return _add_human_revision(
                session, clip, track, previous.frame_index, previous.revision + 1, geometry, author, deleted=True
            )

    def add_track(
        self,
        clip_key: ClipKey,
        category: Category,
        author: str,
        *,
        track_key: str | None = None,
        boxes: Mapping[int, Box3D] | None = None,
        static: bool = False,
    ) -> TrackInfo:
        """Create a human track (review state ``in_review``) with optional boxes by frame index.

        Args:
            track_key: the new key; ``None`` -> ``manual-<n>``, the first free one.
        """
        author = check_author(author)
        category = parse_category(category, f"clip {clip_key}")
        what = f"clip {clip_key}"
        values = {int(i): box_values(box, f"{what} new track frame {i}") for i, box in (boxes or {}).items()}
        with self._writing() as session:
            clip = clip_row(session, clip_key, lock=True)
            check_editable(f"{what}: add track", clip.review_state)
            taken = set(session.scalars(select(TrackRow.track_key).where(TrackRow.clip_id == clip.id)))
            if track_key is None:
                track_key = next(f"manual-{n}" for n in range(1, len(taken) + 2) if f"manual-{n}" not in taken)
            elif track_key in taken:
                raise InputError(f"{what}: track key {track_key!r} already exists")
            if not track_key or len(track_key) > MAX_KEY_CHARS:
                raise InputError(f"{what}: track key must have 1..{MAX_KEY_CHARS} characters, got {track_key!r}")
            for frame_index in values:
                check_frame_index(session, clip, frame_index, f"{what} track {track_key!r}")
            now = _now()
            track = TrackRow(
                clip_id=clip.id,
                track_key=track_key,
                category=category,
                score=HUMAN_SCORE,
                review_state=ReviewState.IN_REVIEW,
                static=bool(static),
                fixed_l_m=None,
                fixed_w_m=None,
                fixed_h_m=None,
                human_touched=True,
                created_at=now,
                updated_at=now,
                review_flags={},
            )
            session.add(track)
            session.flush()
            rows = [
                box_dict(
                    clip.id, track.id, frame_index, 1, geometry, HUMAN_SCORE, None, BoxStage.HUMAN, None, author, now
                )
                for frame_index, geometry in sorted(values.items())
            ]
            insert_boxes(session, rows)
            clip.updated_at = now
            _audit(
                session,
                author,
                AuditAction.TRACK_ADDED,
                clip,
                track=track,
                details={"category": category.value, "frames": sorted(values)},
            )
            return track_info_of(track, len(rows))

    def set_track_category(self, clip_key: ClipKey, track_key: str, category: Category, author: str) -> TrackInfo:
        """Change a track's category (audited with the old and new value)."""
        author = check_author(author)
        category = parse_category(category, f"clip {clip_key}")
        what = f"clip {clip_key} track {track_key!r}"
        with self._writing() as session:
            clip, track = _editable_track(session, clip_key, track_key, what)
            previous = track.category
            track.category = category
            _touch(track, clip, _now())
            _audit(
                session,
                author,
                AuditAction.TRACK_CATEGORY_SET,
                clip,
                track=track,
                details={"from": previous.value, "to": category.value},
            )
            return track_info_of(track, count_current(session, clip.id, track.id))

    def set_review_state(
        self,
        clip_key: ClipKey,
        state: ReviewState,
        author: str,
        *,
        track_key: str | None = None,
        note: str | None = None,
    ) -> ReviewState:
        """Move the clip (or, with ``track_key``, one of its tracks) to ``state``; audited.

        Raises:
            InputError: a transition outside the graph of :mod:`autolabel.store.review`, a sign-off
                with a live track not accepted, or a track transition in a signed-off clip.
        """
        author = check_author(author)
        state = parse_state(state)
        with self._writing() as session:
            clip = clip_row(session, clip_key, lock=True)
            now = _now()
            track = None
            if track_key is None:
                what = f"clip {clip_key}"
                previous = clip.review_state
                check_transition(ReviewTarget.CLIP, what, previous, state)
                if state is ReviewState.SIGNED_OFF:
                    check_all_accepted(session, clip, what)
                clip.review_state = state
                clip.updated_at = now
            else:
                what = f"clip {clip_key} track {track_key!r}"
                if clip.review_state is ReviewState.SIGNED_OFF:
                    raise InputError(f"{what}: the clip is signed off; reopen the clip before changing track reviews")
                track = track_row(session, clip, track_key, what)
                previous = track.review_state
                check_transition(ReviewTarget.TRACK, what, previous, state)
                track.review_state = state
                _touch(track, clip, now)
            details: dict[str, object] = {
                "target": (ReviewTarget.CLIP if track is None else ReviewTarget.TRACK).value,
                "from": previous.value,
                "to": state.value,
            }
            if note:
                details["note"] = note
            _audit(session, author, AuditAction.REVIEW_STATE_CHANGED, clip, track=track, details=details)
            return state

    # ----------------------------------------------------------------------------- reads
    def current_labels(self, clip_key: ClipKey, *, signed_off_only: bool = False) -> ClipLabels:
        """The clip's current labels (latest non-deleted revisions), per frame and per live track.

        Args:
            signed_off_only: refuse unless the clip is signed off (what exporters of final labels pass).

        Raises:
            InputError: unknown clip; ``signed_off_only`` and the clip is not signed off.
        """
        with self._reading() as session:
            clip = clip_row(session, clip_key)
            if signed_off_only and clip.review_state is not ReviewState.SIGNED_OFF:
                raise InputError(
                    f"clip {clip_key}: is {clip.review_state.value}, not {ReviewState.SIGNED_OFF.value} "
                    "(signed-off labels only were asked for)"
                )
            frames = load_frames(session, clip.id)
            track_rows = {t.id: t for t in session.scalars(select(TrackRow).where(TrackRow.clip_id == clip.id))}
            current = latest_query(clip.id).where(BOX_TABLE.c.deleted.is_(False)).subquery()
            rows = session.execute(select(*(current.c[name] for name in CURRENT_COLUMNS))).all()
            info = clip_info_of(session, clip)
        columns = CurrentColumns.from_rows(rows, track_rows)
        frame_boxes = tuple(frame_boxes_of(f, columns, track_rows) for f in frames)
        ids, counts = np.unique(columns.track_ids, return_counts=True)
        tracks = tuple(
            sorted(
                (track_info_of(track_rows[int(i)], int(n)) for i, n in zip(ids, counts, strict=True)),
                key=lambda t: t.track_key,
            )
        )
        return ClipLabels(clip=info, frames=frames, tracks=tracks, frame_boxes=frame_boxes)

    def box_history(self, clip_key: ClipKey, track_key: str, frame_index: int | None = None) -> tuple[BoxRevision, ...]:
        """All revisions of a track's boxes (or of one frame), ordered by frame then revision."""
        what = f"clip {clip_key} track {track_key!r}"
        with self._reading() as session:
            clip = clip_row(session, clip_key)
            track = track_row(session, clip, track_key, what)
            query = (
                select(BoxRow, RunRow)
                .outerjoin(RunRow, BoxRow.run_id == RunRow.id)
                .where(BoxRow.track_id == track.id)
                .order_by(BoxRow.frame_index, BoxRow.revision)
            )
            if frame_index is not None:
                query = query.where(BoxRow.frame_index == int(frame_index))
            return tuple(
                revision_of(box, track.track_key, None if run is None else provenance_of(run))
                for box, run in session.execute(query)
            )

    def tracks(self, clip_key: ClipKey) -> tuple[TrackInfo, ...]:
        """Every track of the clip, also those without a current box (``num_boxes == 0``), by key."""
        with self._reading() as session:
            clip = clip_row(session, clip_key)
            counts = current_counts_by_track(session, clip.id)
            rows = session.scalars(select(TrackRow).where(TrackRow.clip_id == clip.id).order_by(TrackRow.track_key))
            return tuple(track_info_of(t, counts.get(t.id, 0)) for t in rows)

    def review_queue(self, clip_key: ClipKey) -> tuple[TrackInfo, ...]:
        """The clip's live tracks still to review (``prelabeled``, ``in_review``), most flagged boxes first, then
        by ascending score (then key)."""
        pending = (ReviewState.PRELABELED, ReviewState.IN_REVIEW)
        live = (t for t in self.tracks(clip_key) if t.num_boxes and t.review_state in pending)
        return tuple(sorted(live, key=lambda t: (-flagged_boxes(t.review_flags), t.score, t.track_key)))

    def frames(self, clip_key: ClipKey) -> tuple[FrameRecord, ...]:
        with self._reading() as session:
            return load_frames(session, clip_row(session, clip_key).id)

    def clip_info(self, clip_key: ClipKey) -> ClipInfo:
        with self._reading() as session:
            return clip_info_of(session, clip_row(session, clip_key))

    def acceptance(self, clip_key: ClipKey) -> Acceptance:
        """What reviewers did with the clip's pre-labels (:mod:`autolabel.store.acceptance`)."""
        with self._reading() as session:
            return clip_acceptance(session, clip_row(session, clip_key))

    def list_clips(self, *, state: ReviewState | None = None) -> tuple[ClipInfo, ...]:
        """Every clip (or those in ``state``) with counts, ordered by source and name."""
        with self._reading() as session:
            query = select(ClipRow).order_by(ClipRow.source, ClipRow.name)
            if state is not None:
                query = query.where(ClipRow.review_state == parse_state(state))
            clips = list(session.scalars(query))
            frames = dict(session.execute(select(FrameRow.clip_id, func.count()).group_by(FrameRow.clip_id)).all())
            runs = dict(session.execute(select(RunRow.clip_id, func.count()).group_by(RunRow.clip_id)).all())
            live = live_counts(session, None)
            return tuple(
                clip_info_from(c, frames.get(c.id, 0), runs.get(c.id, 0), *live.get(c.id, (0, 0))) for c in clips
            )

    def runs(self, clip_key: ClipKey) -> tuple[RunInfo, ...]:
        """The clip's pipeline runs, oldest first."""
        with self._reading() as session:
            clip = clip_row(session, clip_key)
            rows = session.scalars(select(RunRow).where(RunRow.clip_id == clip.id).order_by(RunRow.id))
            return tuple(
                RunInfo(
                    run_id=r.id,
                    clip=clip_key,
                    provenance=provenance_of(r),
                    status=r.status,
                    started_at=r.started_at,
                    finished_at=r.finished_at,
                    num_tracks=r.num_tracks,
                    num_boxes=r.num_boxes,
                )
                for r in rows
            )

    def audit_log(self, clip_key: ClipKey) -> tuple[AuditEntry, ...]:
        """The clip's audit events, oldest first."""
        with self._reading() as session:
            clip = clip_row(session, clip_key)
            query = (
                select(AuditRow, TrackRow.track_key, BoxRow.frame_index, BoxRow.revision)
                .outerjoin(TrackRow, AuditRow.track_id == TrackRow.id)
                .outerjoin(BoxRow, AuditRow.box_id == BoxRow.id)
                .where(AuditRow.clip_id == clip.id)
                .order_by(AuditRow.id)
            )
            return tuple(
                AuditEntry(
                    event_id=event.id,
                    created_at=event.created_at,
                    actor=event.actor,
                    action=event.action,
                    clip=clip_key,
                    track_key=track_key,
                    frame_index=frame_index,
                    revision=revision,
                    run_id=event.run_id,
                    details=event.details,
                )
                for event, track_key, frame_index, revision in session.execute(query)
            )


def _add_human_revision(
    session: Session,
    clip: ClipRow,
    track: TrackRow,
    frame_index: int,
    revision: int,
    geometry: Mapping[str, float | None],
    author: str,
    *,
    deleted: bool,
) -> BoxRevision:
    """Insert a human box revision (an edit, or a deletion repeating the deleted geometry) and audit it."""
    values = box_dict(
        clip.id, track.id, frame_index, revision, geometry, HUMAN_SCORE, None, BoxStage.HUMAN, None, author, _now(),
        deleted=deleted,
    )  # fmt: skip
    box = BoxRow(**values)
    session.add(box)
    _touch(track, clip, box.created_at)
    session.flush()
    action = AuditAction.BOX_DELETED if deleted else AuditAction.BOX_EDITED
    details = {"frame_index": frame_index, "revision": revision}
    _audit(session, author, action, clip, track=track, box=box, details=details)
    return revision_of(box, track.track_key, None)


def _touch(track: TrackRow, clip: ClipRow, now: datetime) -> None:
    track.human_touched = True
    track.updated_at = now
    clip.updated_at = now


def _audit(
    session: Session,
    actor: str,
    action: AuditAction,
    clip: ClipRow,
    *,
    track: TrackRow | None = None,
    box: BoxRow | None = None,
    run_id: int | None = None,
    details: Mapping[str, object] | None = None,
) -> None:
    session.add(
        AuditRow(
            created_at=_now(),
            actor=actor,
            action=action,
            clip_id=clip.id,
            track_id=None if track is None else track.id,
            box_id=None if box is None else box.id,
            run_id=run_id,
            details=dict(details or {}),
        )
    )


def _editable_track(session: Session, clip_key: ClipKey, track_key: str, what: str) -> tuple[ClipRow, TrackRow]:
    clip = clip_row(session, clip_key, lock=True)
    track = track_row(session, clip, track_key, what)
    check_editable(what, clip.review_state, track.review_state)
    return clip, track
