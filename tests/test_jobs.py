"""Jobs on a local process pool and on a Dask cluster of processes (:mod:`bchw.jobs`): the
same results either way, the same caches, failures that stop the run, interrupted sweeps that
resume from the cache."""

from __future__ import annotations

import json
import math
import operator

import pytest

from bchw.core import intmodel
from bchw.errors import BchwError
from bchw.jobs import Runner, run_jobs
from tests.commands import assert_one_line_error, cli
from tests.streams import random_model


def _collect(function, common, jobs, runner):
    out = {}
    run_jobs(function, common, jobs, runner, lambda i, r: out.__setitem__(i, r))
    return [out[i] for i in range(len(jobs))]


@pytest.fixture(scope="module")
def dask_cluster():
    """A local Dask cluster of two worker processes, as a user would start one."""
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    yield cluster.scheduler_address
    cluster.close()


def test_local_pool_and_dask_give_the_same_results(dask_cluster):
    jobs = [(k,) for k in range(7)]
    inline = _collect(operator.mul, (3,), jobs, Runner(1))
    assert inline == [3 * k for k in range(7)]
    assert _collect(operator.mul, (3,), jobs, Runner(2)) == inline
    assert _collect(operator.mul, (3,), jobs, Runner(scheduler=dask_cluster)) == inline


@pytest.mark.parametrize("where", ["pool", "dask"])
def test_a_failing_job_stops_the_run(where, dask_cluster):
    runner = Runner(2) if where == "pool" else Runner(scheduler=dask_cluster)
    finished = []
    with pytest.raises(ValueError, match="math domain error"):
        run_jobs(math.sqrt, (), [(4.0,), (-1.0,), (9.0,)], runner, lambda i, r: finished.append(r))
    assert all(r in (2.0, 3.0) for r in finished)


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    model = tmp_path / "m.bchw"
    intmodel.save(random_model([8, 4], seed=1, input_bits=8, act_bits=8, out_bits=8), model)
    result = cli(
        "estimate", model, "-o", tmp_path / "e", "--scheduler", "tcp://127.0.0.1:1"
    )  # fmt: skip
    assert_one_line_error(result, "cannot reach the Dask scheduler at tcp://127.0.0.1:1")


@pytest.mark.slow
def test_estimate_sweep_on_dask_equals_local_and_shares_the_cache(tmp_path, dask_cluster):
    """The sweep's synthesis runs on the cluster give the local figures; run again locally on
    the same folder, every run comes from the cache the workers filled."""
    model = tmp_path / "m.bchw"
    intmodel.save(random_model([12, 6, 4], seed=2, input_bits=8, act_bits=8, out_bits=8), model)

    def run(out, *more):
        result = cli("estimate", model, "--sweep", "-o", out, "--json", *more)
        assert result.returncode == 0, result.stderr
        return result.json()

    local = run(tmp_path / "local", "--jobs", "2")
    remote = run(tmp_path / "dask", "--scheduler", dask_cluster)
    assert len(local["sweep"]) >= 2
    for a, b in zip(local["sweep"], remote["sweep"], strict=True):
        assert a == b
    assert local["binary"]["ecp5"]["lut"] == remote["binary"]["ecp5"]["lut"]
    # The same folder again, locally: nothing left to synthesize.
    again = run(tmp_path / "dask", "--jobs", "1")
    assert again["sweep"] == remote["sweep"]
    runs = list((tmp_path / "dask" / "synth" / "cache").glob("*.json"))
    assert runs and all(json.loads(p.read_text())["lut"] >= 0 for p in runs)


@pytest.mark.slow
def test_an_interrupted_estimate_resumes_from_the_cache(tmp_path, monkeypatch):
    from bchw.estimate import run as estimate_run
    from bchw.estimate.options import EstimateOptions
    from rtl_gen.plan import default_folding

    model = random_model([12, 6, 4], seed=3, input_bits=8, act_bits=8, out_bits=8)
    options = EstimateOptions(targets=("ecp5", "ice40"), jobs=1)
    seen = []

    def stop_after_first(message, done, total, left):
        seen.append(done)
        if done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        estimate_run.estimate(model, default_folding(model), 2, options, tmp_path, stop_after_first)
    cached = list((tmp_path / "synth" / "cache").glob("*.json"))
    assert len(cached) == 1  # the one run that finished is kept
    calls = []
    real = estimate_run.run_tool

    def counting(job, *args):
        result = real(job, *args)
        calls.append(result.get("cached"))
        return result

    monkeypatch.setattr(estimate_run, "run_tool", counting)
    report = estimate_run.estimate(model, default_folding(model), 2, options, tmp_path)
    assert sorted(calls) == [False, False, False, True]  # 4 runs, one from the cache
    assert report["binary"]["ecp5"]["lut"] > 0


@pytest.mark.slow
def test_sweep_bits_on_dask_equals_local_and_resumes(tmp_path, short_run, digits, dask_cluster):
    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.precision import sweep_bits

    checkpoint = load_checkpoint(short_run.checkpoint)
    split = digits.test.head(60)
    grid = {"bits": (4, 6), "terms": (1, 2)}

    def stop_after_first(done, total, message):
        if done == 1 and message != "from the cache":
            raise KeyboardInterrupt

    cache = tmp_path / "points"
    with pytest.raises(KeyboardInterrupt):
        sweep_bits(
            checkpoint, digits.train.images, split, **grid, progress=stop_after_first,
            runner=Runner(1), cache_dir=cache,
        )  # fmt: skip
    assert len(list(cache.glob("point-*.json"))) == 1
    told = []
    resumed = sweep_bits(
        checkpoint, digits.train.images, split, **grid, runner=Runner(2), cache_dir=cache,
        progress=lambda done, total, message: told.append((done, message)),
    )  # fmt: skip
    assert told[0] == (1, "from the cache")
    plain = sweep_bits(checkpoint, digits.train.images, split, **grid)
    remote = sweep_bits(
        checkpoint, digits.train.images, split, **grid, runner=Runner(scheduler=dask_cluster)
    )
    assert resumed == plain == remote


def test_runner_checks():
    with pytest.raises(BchwError, match="--jobs must be at least 1"):
        Runner(0).check()
    with pytest.raises(BchwError, match="--scheduler needs an address"):
        Runner(scheduler=" ").check()
