"""The review state machine of clips and tracks (pure rules; the store applies and audits them).

Clips::

    prelabeled ──> in_review ──> accepted ──> signed_off
                     ^   │          │             │
                     │   v          │             │
                     └─ rejected    │             │
                     ^──────────────┘ (reopen)    │
                     ^────────────────────────────┘ (reopen)

Tracks follow the same graph without ``signed_off`` (a track is signed off with its clip).

Guards the store adds on top of the graph:

- a clip goes ``accepted -> signed_off`` only when every live track (one with a current box) is
  ``accepted``;
- a signed-off clip is frozen: no box edit, no track change, no re-run, no track transition
  until it is explicitly reopened (``signed_off -> in_review``), which is audited. Edits are never a
  silent reopen, so labels that may already be exported cannot change behind the exporter's back;
- an ``accepted`` clip or track refuses edits too (reopen it first), so an acceptance always
  refers to the labels that were looked at.
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType

from calibration import InputError


class ReviewState(str, Enum):
    """Review state of a clip or a track."""

    PRELABELED = "prelabeled"  # written by the pipeline, nobody has looked yet
    IN_REVIEW = "in_review"  # a reviewer is on it (also: reopened)
    ACCEPTED = "accepted"  # the reviewer approves the labels
    REJECTED = "rejected"  # needs rework (human edits or a pipeline re-run), then review again
    SIGNED_OFF = "signed_off"  # clips only: final, exportable with ``signed_off_only``


class ReviewTarget(str, Enum):
    CLIP = "clip"
    TRACK = "track"


_S = ReviewState

CLIP_TRANSITIONS: MappingProxyType[ReviewState, frozenset[ReviewState]] = MappingProxyType(
    {
        _S.PRELABELED: frozenset({_S.IN_REVIEW}),
        _S.IN_REVIEW: frozenset({_S.ACCEPTED, _S.REJECTED}),
        _S.REJECTED: frozenset({_S.IN_REVIEW}),
        _S.ACCEPTED: frozenset({_S.SIGNED_OFF, _S.IN_REVIEW}),
        _S.SIGNED_OFF: frozenset({_S.IN_REVIEW}),
    }
)

TRACK_TRANSITIONS: MappingProxyType[ReviewState, frozenset[ReviewState]] = MappingProxyType(
    {
        _S.PRELABELED: frozenset({_S.IN_REVIEW}),
        _S.IN_REVIEW: frozenset({_S.ACCEPTED, _S.REJECTED}),
        _S.REJECTED: frozenset({_S.IN_REVIEW}),
        _S.ACCEPTED: frozenset({_S.IN_REVIEW}),
        _S.SIGNED_OFF: frozenset(),
    }
)

# Clip states in which boxes, tracks and categories may change (by a human or a pipeline re-run).
EDITABLE_CLIP_STATES = frozenset({_S.PRELABELED, _S.IN_REVIEW, _S.REJECTED})


def parse_state(value: ReviewState | str) -> ReviewState:
    try:
        return ReviewState(value)
    except ValueError:
        raise InputError(f"unknown review state {value!r} (one of {[s.value for s in ReviewState]})") from None


def allowed_transitions(target: ReviewTarget, current: ReviewState) -> frozenset[ReviewState]:
    table = CLIP_TRANSITIONS if ReviewTarget(target) is ReviewTarget.CLIP else TRACK_TRANSITIONS
    return table[ReviewState(current)]


def check_transition(target: ReviewTarget, what: str, current: ReviewState, new: ReviewState) -> None:
    """Raise :class:`InputError` unless ``current -> new`` is an edge of ``target``'s graph.

    Args:
        what: names the clip or track in the message (``"clip nuscenes/scene-0061"``).
    """
    current, new = ReviewState(current), ReviewState(new)
    allowed = allowed_transitions(target, current)
    if new not in allowed:
        options = ", ".join(sorted(s.value for s in allowed)) or "none"
        raise InputError(
            f"{what}: review state {current.value} -> {new.value} is not allowed (from {current.value}: {options})"
        )


def check_editable(what: str, clip_state: ReviewState, track_state: ReviewState | None = None) -> None:
    """Raise :class:`InputError` when labels of a clip (and track) in these states may not change."""
    clip_state = ReviewState(clip_state)
    if clip_state not in EDITABLE_CLIP_STATES:
        raise InputError(
            f"{what}: the clip is {clip_state.value}; its labels are frozen "
            f"(set the clip's review state to {_S.IN_REVIEW.value} to reopen it first)"
        )
    if track_state is not None and ReviewState(track_state) is _S.ACCEPTED:
        raise InputError(
            f"{what}: the track is {_S.ACCEPTED.value}; set its review state to {_S.IN_REVIEW.value} before editing"
        )
