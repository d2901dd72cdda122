"""Independent jobs on a local process pool (``--jobs N``) or a Dask cluster (``--scheduler``).

A job is a call of a module-level function: ``function(*common, *args)``. ``common`` holds
what every job shares (sent once per worker: a process pool's initializer, Dask's scatter);
``args`` what differs. Results come back as they finish, in whatever order, through
``done(index, result)``: the callers keep each one at once (the tool runs are cached by
content, precision points are written as files), so an interrupted run loses nothing that
finished and a rerun resumes from the cache. The first failure cancels the jobs not started.

Dask workers need only this package installed, and the paths the jobs read and write (the
output folder) on a filesystem they share with the client: the jobs get absolute paths.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from bchw.errors import BchwError


@dataclass(frozen=True)
class Runner:
    """Where jobs run: ``jobs`` local processes, or the Dask scheduler at ``scheduler``."""

    jobs: int = 1
    scheduler: str | None = None

    def check(self) -> None:
        if self.jobs < 1:
            raise BchwError(f"--jobs must be at least 1, got {self.jobs}")
        if self.scheduler is not None and not self.scheduler.strip():
            raise BchwError("--scheduler needs an address (tcp://HOST:8786)")

    def describe(self) -> str:
        if self.scheduler:
            return f"the Dask scheduler at {self.scheduler}"
        return f"{self.jobs} local process{'es' if self.jobs > 1 else ''}"


_COMMON: tuple = ()


def _init(common: tuple) -> None:
    global _COMMON
    _COMMON = common


def _call(function: Callable, args: tuple) -> Any:
    return function(*_COMMON, *args)


def run_jobs(
    function: Callable[..., Any],
    common: tuple,
    jobs: Sequence[tuple],
    runner: Runner,
    done: Callable[[int, Any], None],
    started: Callable[[int], None] | None = None,
) -> None:
    """Run ``function(*common, *jobs[i])`` for every ``i``; ``done(i, result)`` as each
    finishes (in this process), ``started(i)`` as each is handed out."""
    runner.check()
    if not jobs:
        return
    if runner.scheduler:
        _run_dask(function, common, jobs, runner.scheduler, done, started)
    elif runner.jobs == 1 or len(jobs) == 1:
        for index, args in enumerate(jobs):  # no pool to start for one at a time
            if started:
                started(index)
            done(index, function(*common, *args))
    else:
        _run_local(function, common, jobs, runner.jobs, done, started)


def _run_local(function, common, jobs, workers, done, started) -> None:
    # spawn: a fresh interpreter per worker (forking a process that holds threads is unsafe).
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=context, initializer=_init, initargs=(common,)
    )
    waiting = list(enumerate(jobs))[::-1]
    running: dict = {}
    try:
        while waiting or running:
            # Hand out no more than the pool runs at once, so that "started" means started
            # and a failure leaves the rest unstarted.
            while waiting and len(running) < workers:
                index, args = waiting.pop()
                running[pool.submit(_call, function, args)] = index
                if started:
                    started(index)
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                done(index, future.result())
    finally:
        for future in running:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(function, common, jobs, address, done, started) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - a dependency of the package
        raise BchwError(
            "--scheduler needs the distributed package (pip install distributed)"
        ) from None
    try:
        client = Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise BchwError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    futures = {}
    try:
        shared = client.scatter(list(common), broadcast=True) if common else []
        for index, args in enumerate(jobs):
            future = client.submit(function, *shared, *args, pure=False)
            futures[future] = index
            if started:
                started(index)
        for future in as_completed(list(futures), loop=client.loop):
            done(futures[future], future.result())
    finally:
        for future in futures:
            future.cancel()
        client.close()
