"""One tracking pass over a clip (forward, or backward on time-reversed frames): the online tracker.

Per frame (:func:`step`): predict every live track with its Kalman model, score all (track, detection)
pairs once (:func:`pair_scores`), then associate in two stages (ByteTrack / SimpleTrack):

1. confident detections (``score >= high_score_threshold``) against all live tracks;
2. the remaining confident tracks (confirmed or lost, not tentative) against the low-score detections.

A pair is admissible when its classes are compatible, its centres lie within the track class's gate and
its affinity passes the class's threshold (a stricter one for low-score detections). Matched tracks are
updated (detection yaw flipped towards the track heading first), the life cycle advances
(:func:`advance_life_cycle`), unmatched confident detections start tentative tracks and dead tracks leave
the live set. Every match is logged in :class:`PassRecords` for the output stages. The backward pass of
the offboard mode is this pass on time-reversed frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from tracking import kalman
from tracking.affinity import KIND_CENTER_DISTANCE, KIND_GIOU_3D, KIND_GIOU_BEV, track_detection_scores
from tracking.assignment import assign
from tracking.config import AffinityKind, LifeCycle, TrackerConfig
from tracking.tables import ClassTable, FrameArrays
from tracking.types import TrackState

STATE_CODES: tuple[TrackState, ...] = (TrackState.TENTATIVE, TrackState.CONFIRMED, TrackState.LOST, TrackState.DEAD)
TENTATIVE, CONFIRMED, LOST, DEAD = range(4)  # codes of STATE_CODES in TrackBank.counters
_BOX_FROM_STATE = np.array([kalman.X, kalman.Y, kalman.Z, kalman.L, kalman.W, kalman.H, kalman.YAW])


# Columns of TrackBank.counters.
ID, CLASS, STATE, HITS, STREAK, MISSES, LAST_HIT_US = range(7)
_NO_STATES = np.zeros((0, kalman.STATE_DIM))
_NO_COVARIANCES = np.zeros((0, kalman.STATE_DIM, kalman.STATE_DIM))
_NO_COUNTERS = np.zeros((0, 7), dtype=np.int64)
_NO_LIMIT = int(np.iinfo(np.int64).max)
_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class TrackBank:
    """The T live tracks of a pass as arrays.

    Attributes:
        x, P: (T, 10) Kalman states and (T, 10, 10) covariances (layout in :mod:`tracking.kalman`).
        counters: (T, 7) int64 columns :data:`ID` (increasing with birth), :data:`CLASS` (class index of
            the track's first detection: its model and parameters), :data:`STATE` (code of
            :data:`STATE_CODES`), :data:`HITS` (matched frames so far), :data:`STREAK` (consecutive
            matches), :data:`MISSES` (consecutive misses), :data:`LAST_HIT_US` (time of the latest match).
        next_id: id of the next new track.
        time_us: time of the latest step (None before the first).
    """

    x: np.ndarray
    P: np.ndarray
    counters: np.ndarray
    next_id: int = 0
    time_us: int | None = None

    @classmethod
    def empty(cls) -> TrackBank:
        return cls(
            np.zeros((0, kalman.STATE_DIM)),
            np.zeros((0, kalman.STATE_DIM, kalman.STATE_DIM)),
            np.zeros((0, 7), dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.counters.shape[0])

    @property
    def ids(self) -> np.ndarray:
        return self.counters[:, ID]

    @property
    def classes(self) -> np.ndarray:
        return self.counters[:, CLASS]

    @property
    def track_states(self) -> tuple[TrackState, ...]:
        return tuple(STATE_CODES[code] for code in self.counters[:, STATE])

    def boxes(self) -> np.ndarray:
        """(T, 7) current boxes ``x, y, z, l, w, h, yaw``."""
        return self.x[:, _BOX_FROM_STATE]


@dataclass(frozen=True, eq=False)
class PassRecords:
    """Flat log of a pass: one row per (track, frame) where the track took a detection.

    Rows are sorted by track id, then frame. Velocities and yaws are the track's posterior estimate
    at that frame (yaw: the detection's, flipped towards the track heading).

    Attributes:
        track_ids, frame_indices, detection_indices: (R,) int64.
        yaws: (R,) rad.
        velocities: (R, 2) m/s.
        hits: (R,) int64 matches of the track up to and including this frame (in the pass's direction).
        confirmed: (R,) bool, the track was confirmed after this frame's update.
    """

    track_ids: np.ndarray
    frame_indices: np.ndarray
    detection_indices: np.ndarray
    yaws: np.ndarray
    velocities: np.ndarray
    hits: np.ndarray
    confirmed: np.ndarray

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])

    def select(self, rows: np.ndarray) -> PassRecords:
        return PassRecords(
            self.track_ids[rows],
            self.frame_indices[rows],
            self.detection_indices[rows],
            self.yaws[rows],
            self.velocities[rows],
            self.hits[rows],
            self.confirmed[rows],
        )

    def ever_confirmed(self) -> PassRecords:
        """The rows of tracks that were confirmed at some frame (tentative-only tracks dropped)."""
        if len(self) == 0:
            return self
        confirmed_ids = np.unique(self.track_ids[self.confirmed])
        return self.select(np.isin(self.track_ids, confirmed_ids))


_KIND_CODES = {
    AffinityKind.GIOU_BEV: KIND_GIOU_BEV,
    AffinityKind.GIOU_3D: KIND_GIOU_3D,
    AffinityKind.CENTER_DISTANCE: KIND_CENTER_DISTANCE,
}


def pair_scores(
    tracks: np.ndarray,
    track_classes: np.ndarray,
    detections: np.ndarray,
    detection_classes: np.ndarray,
    n_high: int,
    table: ClassTable,
    kind: AffinityKind,
) -> tuple[np.ndarray, np.ndarray]:
    """Affinity (T, D) and admissibility (T, D) of predicted track boxes (T, 7) and detections (D, 7).

    A pair is admissible when the classes are compatible, the BEV centres lie within the track class's
    gate and the affinity passes its threshold: ``min_giou`` (or ``max_distance_m`` for centre distance)
    for the first ``n_high`` (confident) detections, the ``low_score_`` ones for the others.
    """
    if kind is AffinityKind.CENTER_DISTANCE:
        threshold, low_threshold = -table.max_distance_m, -table.low_score_max_distance_m
    else:
        threshold, low_threshold = table.min_giou, table.low_score_min_giou
    return track_detection_scores(
        np.ascontiguousarray(tracks),
        track_classes,
        detections,
        detection_classes,
        _KIND_CODES[kind],
        table.gate_m,
        threshold,
        table.compatible,
        n_high,
        low_threshold,
    )


@numba.njit(cache=True)
def _advance(
    counters: np.ndarray,
    matched_rows: np.ndarray,
    time_us: int,
    min_hits: int,
    max_tentative_misses: int,
    max_age_us: int,
    max_age_frames: int,
) -> np.ndarray:
    """Advance the (T, 7) counters of a bank by one frame in place; returns the (T,) bool alive mask."""
    n = counters.shape[0]
    matched = np.zeros(n, dtype=np.bool_)
    for r in matched_rows:
        matched[r] = True
    alive = np.ones(n, dtype=np.bool_)
    for t in range(n):
        tentative = counters[t, STATE] == TENTATIVE
        if matched[t]:
            counters[t, HITS] += 1
            counters[t, STREAK] += 1
            counters[t, MISSES] = 0
            counters[t, LAST_HIT_US] = time_us
            if not tentative or counters[t, STREAK] >= min_hits:
                counters[t, STATE] = CONFIRMED
        else:
            counters[t, STREAK] = 0
            counters[t, MISSES] += 1
            if tentative:
                dead = counters[t, MISSES] > max_tentative_misses
            else:
                counters[t, STATE] = LOST
                dead = counters[t, MISSES] > max_age_frames or time_us - counters[t, LAST_HIT_US] > max_age_us
            if dead:
                counters[t, STATE] = DEAD
                alive[t] = False
    return alive


def advance_life_cycle(counters: np.ndarray, matched_rows: np.ndarray, time_us: int, life: LifeCycle) -> np.ndarray:
    """Counters (T, 7) after a frame in which rows ``matched_rows`` took a detection at ``time_us``.

    Matched: hits and streak grow, misses reset; a tentative track is confirmed once its streak reaches
    ``min_hits``, a lost one is confirmed again. Missed: a tentative track dies after more than
    ``max_tentative_misses`` consecutive misses; a confirmed one becomes lost, and dies when its latest
    match is older than ``max_age_s`` or it missed more than ``max_age_frames`` frames in a row.
    """
    out = np.array(counters, dtype=np.int64, copy=True)
    _advance_in_place(out, matched_rows, time_us, life)
    return out


def _advance_in_place(counters: np.ndarray, matched_rows: np.ndarray, time_us: int, life: LifeCycle) -> np.ndarray:
    """:func:`advance_life_cycle` in place; returns the (T,) bool mask of the tracks still alive."""
    return _advance(
        counters,
        np.asarray(matched_rows, dtype=np.int64),
        int(time_us),
        life.min_hits,
        life.max_tentative_misses,
        _NO_LIMIT if life.max_age_s is None else round(life.max_age_s * 1e6),
        _NO_LIMIT if life.max_age_frames is None else life.max_age_frames,
    )


def associate(
    boxes: np.ndarray,
    classes: np.ndarray,
    tentative: np.ndarray,
    frame: FrameArrays,
    table: ClassTable,
    config: TrackerConfig,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Two-stage association of T predicted tracks with a frame's candidate detections.

    Args:
        boxes: (T, 7) predicted boxes; classes: (T,) their class indices; tentative: (T,) bool.

    Returns:
        (M,) matched track rows and (M,) detection indices (into the frame), the first ones from stage 1
        (confident detections), and how many those are.
    """
    candidates = frame.candidates
    if boxes.shape[0] == 0 or candidates.shape[0] == 0:
        return _NO_ROWS, _NO_ROWS, 0
    n_high = frame.n_high
    affinity, admissible = pair_scores(
        boxes, classes, frame.candidate_boxes, frame.candidate_classes, n_high, table, config.affinity
    )
    r1, c1 = assign(affinity[:, :n_high], admissible[:, :n_high], config.solver)
    if n_high == candidates.shape[0]:
        return r1, candidates[c1], r1.shape[0]
    free = ~tentative
    free[r1] = False
    rows2 = np.flatnonzero(free)
    if rows2.shape[0] == 0:
        return r1, candidates[c1], r1.shape[0]
    r2, c2 = assign(affinity[rows2, n_high:], admissible[rows2, n_high:], config.solver)
    return np.concatenate([r1, rows2[r2]]), candidates[np.concatenate([c1, n_high + c2])], r1.shape[0]


def _births(
    frame: FrameArrays, matched_dets: np.ndarray, table: ClassTable, life: LifeCycle, next_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tracks born from the unmatched confident detections.

    Returns:
        Their detection indices (B,), states (B, 10), covariances (B, 10, 10) and counters (B, 7).
    """
    high = frame.candidates[: frame.n_high]
    if matched_dets.shape[0]:
        taken = np.zeros(frame.scores.shape[0], dtype=bool)
        taken[matched_dets] = True
        high = high[~taken[high]]
    born = high
    if born.shape[0] == 0:
        return born, _NO_STATES, _NO_COVARIANCES, _NO_COUNTERS
    cls = frame.classes[born]
    x0, P0 = kalman.initial_states(frame.boxes[born], frame.velocity[born], table.is_ctrv[cls], table.noise_std[cls])
    n = born.shape[0]
    counters = np.empty((n, 7), dtype=np.int64)
    counters[:, ID] = next_id + np.arange(n)
    counters[:, CLASS] = cls
    counters[:, STATE] = CONFIRMED if life.min_hits <= 1 else TENTATIVE
    counters[:, HITS] = counters[:, STREAK] = 1
    counters[:, MISSES] = 0
    counters[:, LAST_HIT_US] = frame.timestamp_us
    return born, x0, P0, counters


def step(
    bank: TrackBank,
    frame: FrameArrays,
    table: ClassTable,
    config: TrackerConfig,
    life: LifeCycle,
    frame_index: int = 0,
) -> tuple[TrackBank, PassRecords]:
    """Advance a pass by one frame; returns the new bank and the frame's records."""
    counters = bank.counters.copy()
    cls_t = counters[:, CLASS]
    if bank.time_us is None or len(bank) == 0:
        x, P = bank.x.copy(), bank.P.copy()
    else:
        dt_s = (frame.timestamp_us - bank.time_us) * 1e-6
        x, P = kalman.predict(bank.x, bank.P, dt_s, table.is_ctrv, table.accel_std_mps2, table.turn_std, cls_t)
    tracks, dets, n_confident_matches = associate(
        x[:, _BOX_FROM_STATE], cls_t, counters[:, STATE] == TENTATIVE, frame, table, config
    )
    yaws, velocity = kalman.update_rows(
        x, P, tracks, frame.boxes, frame.velocity, table.is_ctrv, table.noise_std, dets, cls_t[tracks]
    )

    alive = _advance_in_place(counters, tracks, frame.timestamp_us, life)
    matched_counters = counters[tracks]

    born, x0, P0, born_counters = _NO_ROWS, _NO_STATES, _NO_COVARIANCES, _NO_COUNTERS
    if frame.n_high > n_confident_matches:  # some confident detection is left: it starts a track
        born, x0, P0, born_counters = _births(frame, dets, table, life, bank.next_id)
    if born.shape[0]:
        velocity = np.concatenate([velocity, kalman.velocities(x0, table.is_ctrv[born_counters[:, CLASS]])])
        yaws = np.concatenate([yaws, frame.boxes[born, 6]])
        matched_counters = np.concatenate([matched_counters, born_counters])
        dets = np.concatenate([dets, born])
    if not alive.all():
        x, P, counters = x[alive], P[alive], counters[alive]
    if born.shape[0]:
        x, P, counters = np.concatenate([x, x0]), np.concatenate([P, P0]), np.concatenate([counters, born_counters])
    records = PassRecords(
        track_ids=matched_counters[:, ID],
        frame_indices=np.full(dets.shape[0], frame_index, dtype=np.int64),
        detection_indices=dets,
        yaws=yaws,
        velocities=velocity,
        hits=matched_counters[:, HITS],
        confirmed=matched_counters[:, STATE] == CONFIRMED,
    )
    return TrackBank(x, P, counters, bank.next_id + born.shape[0], frame.timestamp_us), records


def run_pass(frames: Sequence[FrameArrays], table: ClassTable, config: TrackerConfig, life: LifeCycle) -> PassRecords:
    """Track ``frames`` in the given order; record frame indices are positions in ``frames``."""
    bank = TrackBank.empty()
    parts: list[PassRecords] = []
    for k, frame in enumerate(frames):
        bank, records = step(bank, frame, table, config, life, k)
        parts.append(records)
    return _concatenate_sorted(parts)


def _concatenate_sorted(parts: list[PassRecords]) -> PassRecords:
    """One table from per-frame parts (in frame order), sorted by track id then frame."""
    if not parts:
        ints = np.zeros(0, dtype=np.int64)
        return PassRecords(ints, ints, ints, np.zeros(0), np.zeros((0, 2)), ints, np.zeros(0, dtype=bool))
    merged = PassRecords(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in PassRecords.__dataclass_fields__)
    )
    return merged.select(np.argsort(merged.track_ids, kind="stable"))
