"""Forked workers: results in order, inputs inherited rather than sent, errors raised in the caller."""

from __future__ import annotations

import os

import numpy as np
import pytest

from autolabel.parallel import available_cores, forked_map


def test_results_come_back_in_order_from_other_processes() -> None:
    table = np.arange(1_000_000, dtype=np.int64)  # inherited by the workers, never pickled

    def task(index: int) -> tuple[int, int]:
        return int(table[index * 1000 : (index + 1) * 1000].sum()), os.getpid()

    results = list(forked_map(task, range(20), workers=2))
    assert [r[0] for r in results] == [int(table[i * 1000 : (i + 1) * 1000].sum()) for i in range(20)]
    # The first item warms up in this process; the others run in workers.
    assert results[0][1] == os.getpid() and os.getpid() not in {r[1] for r in results[1:]}


def test_what_the_first_item_loads_is_inherited_by_the_workers() -> None:
    loaded: list[int] = []

    def task(index: int) -> int:
        if not loaded:  # a lazily loaded resource: each process that has not got it loads it
            loaded.append(os.getpid())
        return loaded[0]

    assert set(forked_map(task, range(8), workers=2)) == {os.getpid()}


def test_one_worker_runs_in_this_process() -> None:
    assert set(forked_map(lambda _: os.getpid(), range(5), workers=1)) == {os.getpid()}


def test_a_worker_error_is_raised_here_and_the_next_map_works() -> None:
    def task(index: int) -> int:
        if index == 3:
            raise ValueError(f"bad item {index}")
        return index

    with pytest.raises(ValueError, match="bad item 3"):
        list(forked_map(task, range(6), workers=2))
    assert list(forked_map(lambda i: i * i, range(4), workers=2)) == [0, 1, 4, 9]


def test_available_cores_is_positive() -> None:
    assert 1 <= available_cores() <= (os.cpu_count() or 1)
