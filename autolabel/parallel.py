"""Work of one clip spread over the machine's cores: forked worker processes that inherit the inputs.

A stage's items (keyframes to detect in, tracks to refine) are independent, but their inputs are large
(the clip's lidar). Forked workers share the parent's memory copy-on-write, so only the item indices go
out and the (small) results come back pickled. Where fork is missing, or with one worker, the items run
in this process; the results are the same either way, and in the same order.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

_TASK: list[Callable[[int], Any] | None] = [None]  # the function forked workers run, set around a pool's life


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def forked_map(fn: Callable[[Item], Result], items: Sequence[Item], workers: int) -> Iterator[Result]:
    """``fn`` over ``items`` in order, in up to ``workers`` forked processes (this one with ``workers <= 1``).

    ``fn`` may be a closure over large arrays: the workers inherit it. It must not use a GPU (CUDA does not
    survive a fork) and its results must pickle. An exception in a worker is raised here. The first item runs
    in this process before the fork, so what ``fn`` loads on first use (compiled numba kernels, lazily built
    indexes) is loaded once and inherited, not loaded again by every worker.
    """
    count = min(workers, len(items) - 1)
    if count <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from (fn(item) for item in items)
        return
    if _TASK[0] is not None:
        raise RuntimeError("forked_map is not re-entrant")
    yield fn(items[0])
    _TASK[0] = lambda index: fn(items[index])
    try:
        with ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("fork")) as pool:
            yield from pool.map(_run, range(1, len(items)))
    finally:
        _TASK[0] = None


def _run(index: int) -> Any:
    task = _TASK[0]
    if task is None:  # pragma: no cover - only in a worker that was not forked from forked_map
        raise RuntimeError("forked_map worker without a task")
    return task(index)
