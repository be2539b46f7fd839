"""How much of the pre-labelling reviewers kept: the share of pre-label boxes accepted untouched.

Per (track, frame) the *pre-label* is the latest pipeline revision (stage detected, interpolated or refined) when it
is not a deletion: the box a reviewer was shown. What happened to it afterwards, in this order::

    a later human revision that deletes the box      -> deleted
    a later human revision that moves/resizes it     -> edited
    none, and the track is accepted (or the clip signed off)  -> accepted untouched
    none, and the track is rejected                  -> rejected
    none, and the track is not decided yet           -> pending

Boxes a person drew where no pre-label was (a human first revision, or after a pipeline deletion) are *added*:
objects the pipeline missed. The acceptance rate is ``accepted untouched / decided`` (decided = every pre-label that
is not pending), NaN before any decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from autolabel.store.models import BoxRow, ClipRow, TrackRow
from autolabel.store.review import ReviewState
from autolabel.store.types import PIPELINE_STAGES

OUTCOMES = ("accepted_untouched", "edited", "deleted", "rejected", "pending")


@dataclass(frozen=True)
class Acceptance:
    """Pre-label outcomes of one clip (counts of boxes), overall and per category (category -> outcome -> count).

    Attributes:
        counts: outcome (:data:`OUTCOMES`) -> number of pre-label boxes.
        added: boxes people drew where there was no pre-label.
        per_category: category value -> outcome -> count (``added`` included as an outcome).
    """

    counts: dict[str, int]
    added: int
    per_category: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def prelabels(self) -> int:
        return sum(self.counts.values())

    @property
    def decided(self) -> int:
        return self.prelabels - self.counts["pending"]

    @property
    def rate(self) -> float:
        """Share of decided pre-label boxes accepted untouched (NaN before any decision)."""
        return self.counts["accepted_untouched"] / self.decided if self.decided else float("nan")

    def as_dict(self) -> dict:
        return {
            "rate": self.rate,
            "prelabels": self.prelabels,
            "decided": self.decided,
            **self.counts,
            "added": self.added,
            "per_category": self.per_category,
        }


def _outcome(after: list[bool], state: ReviewState) -> str:
    """The outcome of a pre-label given the deleted flags of the human revisions after it, in order."""
    if after:
        return "deleted" if after[-1] else "edited"
    if state in (ReviewState.ACCEPTED, ReviewState.SIGNED_OFF):
        return "accepted_untouched"
    return "rejected" if state is ReviewState.REJECTED else "pending"


def clip_acceptance(session: Session, clip: ClipRow) -> Acceptance:
    """The :class:`Acceptance` of a clip's current revisions."""
    tracks = {t.id: t for t in session.scalars(select(TrackRow).where(TrackRow.clip_id == clip.id))}
    rows = session.execute(
        select(BoxRow.track_id, BoxRow.frame_index, BoxRow.stage, BoxRow.deleted)
        .where(BoxRow.clip_id == clip.id)
        .order_by(BoxRow.track_id, BoxRow.frame_index, BoxRow.revision)
    ).all()
    history: dict[tuple[int, int], list[tuple[bool, bool]]] = {}
    for track_id, frame_index, stage, deleted in rows:
        history.setdefault((track_id, frame_index), []).append((stage in PIPELINE_STAGES, bool(deleted)))
    counts = dict.fromkeys(OUTCOMES, 0)
    added = 0
    per_category: dict[str, dict[str, int]] = {}
    for (track_id, _), revisions in history.items():
        track = tracks[track_id]
        state = ReviewState.SIGNED_OFF if clip.review_state is ReviewState.SIGNED_OFF else track.review_state
        last_pipeline = max((i for i, (pipeline, _) in enumerate(revisions) if pipeline), default=-1)
        if last_pipeline >= 0 and not revisions[last_pipeline][1]:
            outcome = _outcome([deleted for _, deleted in revisions[last_pipeline + 1 :]], state)
            counts[outcome] += 1
        elif not revisions[-1][1]:  # a live box with no pre-label under it: drawn by a person
            outcome, added = "added", added + 1
        else:
            continue
        entry = per_category.setdefault(track.category.value, dict.fromkeys((*OUTCOMES, "added"), 0))
        entry[outcome] += 1
    return Acceptance(counts, added, dict(sorted(per_category.items())))
