"""Batch runs of the pipeline over many clips: local process pool or a Ray cluster.

Every clip is one call of :func:`autolabel.pipeline.run_clip` in a worker; a failing clip is reported with
its error and does not stop the others. ``resume`` skips clips whose latest stored run has the same
parameters hash (same configuration and code version).
"""

from __future__ import annotations

import glob
import os
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from enum import Enum
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from autolabel.datasets.model import ClipSource
from autolabel.pipeline import ClipSpec, PipelineConfig, RunSummary, code_version, content_hash, run_clip
from autolabel.settings import Settings, resolve_device
from autolabel.store import ClipKey, open_store
from calibration import AutolabelError, InputError


class Executor(str, Enum):
    LOCAL = "local"
    RAY = "ray"


class Outcome(str, Enum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class ClipResult:
    """One clip of a batch: its outcome, its run summary (done) or error (failed)."""

    spec: ClipSpec
    outcome: Outcome
    summary: RunSummary | None = None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "clip": self.spec.name,
            "source": self.spec.source.value,
            "root": str(self.spec.root),
            "outcome": self.outcome.value,
            "summary": self.summary.as_dict() if self.summary else None,
            "error": self.error,
        }


def discover_clips(
    source: ClipSource, roots: Sequence[str], names: Sequence[str] = (), *, version: str | None = None
) -> list[ClipSpec]:
    """Clips under ``roots`` (each may be a glob): the named scenes/sequences, or all of them."""
    from autolabel.datasets.kitti import list_sequences
    from autolabel.datasets.nuscenes import list_scenes

    paths = [Path(p) for pattern in roots for p in (sorted(glob.glob(pattern)) or [pattern])]
    specs = []
    for root in paths:
        if not root.is_dir():
            raise InputError(f"{root}: clip root not found")
        available = list_scenes(root, version) if source is ClipSource.NUSCENES else list_sequences(root)
        chosen = list(names) or available
        specs += [ClipSpec(source, root, name, version) for name in chosen]
    if not specs:
        raise InputError(f"no clips found under {', '.join(map(str, roots))}")
    return specs


def parameters_hash(config: PipelineConfig) -> str:
    """The hash :func:`run_clip` records for its runs (configuration and code version)."""
    return content_hash(config, code_version())


def already_done(spec: ClipSpec, config: PipelineConfig, settings: Settings) -> bool:
    """Whether the clip's latest stored run finished with the same parameters hash."""
    store = open_store(settings.database_url, settings=settings)
    try:
        runs = store.runs(ClipKey(spec.source.value, _clip_name(spec)))
    except InputError:  # clip not in the store yet
        return False
    finally:
        store.close()
    return bool(runs) and runs[-1].provenance.parameters_hash == parameters_hash(config)


def _clip_name(spec: ClipSpec) -> str:
    """The clip's name as its reader names it (KITTI clips are ``kitti-<seq>``)."""
    if spec.source is ClipSource.KITTI:
        from autolabel.datasets.kitti import CLIP_NAME_PREFIX, _normalize_seq

        return f"{CLIP_NAME_PREFIX}{_normalize_seq(spec.name)}"
    return spec.name


def run_one(spec: ClipSpec, config: PipelineConfig, settings_env: dict[str, str]) -> ClipResult:
    """Worker body (also the Ray task): run one clip, never raise."""
    os.environ.update(settings_env)
    try:
        import torch

        torch.set_num_threads(1)
        settings = Settings()
        store = open_store(settings.database_url, settings=settings)
        try:
            summary = run_clip(spec, settings.home, store, resolve_device(settings.device), config)
        finally:
            store.close()
        return ClipResult(spec, Outcome.DONE, summary)
    except AutolabelError as exc:
        return ClipResult(spec, Outcome.FAILED, error=str(exc))
    except Exception as exc:  # a bug or a corrupt file the readers did not foresee: report, go on
        return ClipResult(spec, Outcome.FAILED, error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


def _settings_env(settings: Settings) -> dict[str, str]:
    env = {"AUTOLABEL_HOME": str(Path(settings.home).resolve()), "AUTOLABEL_DEVICE": settings.device.value}
    if settings.database_url:
        env["AUTOLABEL_DATABASE_URL"] = settings.database_url
    return env


def run_batch(
    specs: Sequence[ClipSpec],
    settings: Settings,
    config: PipelineConfig | None = None,
    *,
    executor: Executor = Executor.LOCAL,
    workers: int | None = None,
    resume: bool = False,
    ray_address: str | None = None,
    on_result: Callable[[ClipResult], None] | None = None,
) -> list[ClipResult]:
    """Run the pipeline on every clip; results in completion order (``on_result`` is told of each)."""
    config = config or PipelineConfig()
    seen: dict[tuple[str, str], ClipSpec] = {}
    for spec in specs:
        key = (spec.source.value, _clip_name(spec))
        if key in seen:
            raise InputError(
                f"clip {key[1]} ({key[0]}) is listed twice: {seen[key].root} and {spec.root}; "
                "the label store identifies a clip by source and name"
            )
        seen[key] = spec
    env = _settings_env(settings)
    # Create/upgrade the store once before the workers start, so they do not race on the migration.
    open_store(settings.database_url, settings=settings).close()
    results: list[ClipResult] = []

    def done(result: ClipResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    todo = []
    for spec in specs:
        if resume and already_done(spec, config, settings):
            done(ClipResult(spec, Outcome.SKIPPED))
        else:
            todo.append(spec)
    if not todo:
        return results
    if executor is Executor.RAY:
        _run_ray(todo, config, env, ray_address, done)
    else:
        count = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        with ProcessPoolExecutor(max_workers=count, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_one, spec, config, env) for spec in todo]
            for future in as_completed(futures):
                done(future.result())
    return results


def _run_ray(
    specs: Sequence[ClipSpec],
    config: PipelineConfig,
    env: dict[str, str],
    address: str | None,
    done: Callable[[ClipResult], None],
) -> None:
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs the ray extra: pip install 'autolabel[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1)(run_one)
        pending = {task.remote(spec, config, env): spec for spec in specs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    done(ray.get(ref))
                except Exception as exc:  # the worker itself died (out of memory, node lost)
                    done(ClipResult(spec, Outcome.FAILED, error=f"ray task failed: {exc}"))
    finally:
        if started_here:
            ray.shutdown()
