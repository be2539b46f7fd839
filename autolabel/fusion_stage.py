"""The fusion stage of a clip: poses (odometry when missing), fusion, calibration QA, artifacts.

One function that the CLI (and the pipeline) call; it returns everything later stages need.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from autolabel.artifacts import ClipArtifacts, artifact_path, open_artifacts, sweep_arrays, write_artifacts
from autolabel.datasets.model import Clip
from autolabel.fuse import FuseConfig, FusedClip, fuse_sweeps, rasterize_fused
from autolabel.poses import odometry_poses, odometry_summary, without_poses
from autolabel.qa import ClipQA, QAConfig, calibration_qa
from fusion.odometry import OdometryConfig, OdometryResult

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class FusionStageConfig:
    """Parameters of the whole stage.

    Attributes:
        fuse: aggregation, painting and BEV.
        odometry: used only for clips without poses.
        qa: calibration QA; ``None`` skips it.
        recompute_poses: run the odometry even when the clip has poses (they are replaced).
    """

    fuse: FuseConfig = field(default_factory=FuseConfig)
    odometry: OdometryConfig = field(default_factory=OdometryConfig)
    qa: QAConfig | None = field(default_factory=QAConfig)
    recompute_poses: bool = False


@dataclass(frozen=True, eq=False)
class FusionStageResult:
    """What the stage made: the clip with poses, the fused arrays, odometry and QA (if run), and the written
    artifacts (opened with their per-point arrays still in memory, so later stages need not read them back)."""

    clip: Clip
    fused: FusedClip
    odometry: OdometryResult | None
    qa: ClipQA | None
    artifacts: ClipArtifacts

    @property
    def path(self) -> Path:
        return self.artifacts.path


def run_fusion_stage(
    clip: Clip,
    home: Path,
    device: torch.device,
    config: FusionStageConfig | None = None,
    progress: Progress | None = None,
    cache_key: str | None = None,
) -> FusionStageResult:
    """Poses -> fusion -> calibration QA -> zarr artifacts under ``home`` (atomic).

    ``progress(step, done, total)`` is called with the step's name ("odometry", "fusion",
    "calibration QA"); ``total`` is ``None`` for steps without a count. ``cache_key`` (the pipeline's hash
    of the inputs and parameters) is recorded in the manifest.
    """

    config = config or FusionStageConfig()

    def report(step: str, done: int, total: int | None) -> None:
        if progress is not None:
            progress(step, done, total)

    extra: dict = {"device": str(device), "cache_key": cache_key}
    odometry = None
    if config.recompute_poses or not clip.has_poses:
        report("odometry", 0, None)
        clip, odometry = odometry_poses(without_poses(clip), config.odometry)
        extra["odometry"] = odometry_summary(odometry, config.odometry)
        if odometry.degraded.any():
            log.warning("clip %s: %d odometry steps degraded", clip.name, int(odometry.degraded.sum()))
    def fusion_progress(done: int, total: int) -> None:
        report("fusion", done, total)

    sweeps = fuse_sweeps(clip, device, config.fuse, fusion_progress)
    # The QA needs only the sweeps: it runs while the rasters are made and the arrays gathered and written
    # (numba kernels, compression and file writes leave the interpreter free); the manifest, written last,
    # waits for it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="calibration-qa") as pool:
        checked = None if config.qa is None else pool.submit(calibration_qa, clip, sweeps, config.qa)

        def manifest_extra() -> dict:
            if checked is None:
                return extra
            report("calibration QA", 0, None)
            return {**extra, "qa": {**checked.result().as_dict(), "parameters": asdict(config.qa)}}

        fused = rasterize_fused(clip, sweeps, device, config.fuse, fusion_progress)
        arrays = sweep_arrays(fused)
        path = write_artifacts(artifact_path(home, clip), clip, fused, config.fuse, manifest_extra, odometry, arrays)
    qa = None if checked is None else checked.result()
    return FusionStageResult(clip, fused, odometry, qa, open_artifacts(path, arrays))
