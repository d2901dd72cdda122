"""``bchw estimate`` as functions: the binary design against its MAC baseline, per FPGA family.

:func:`estimate` plans both designs (the same folding), counts them with the analytical model,
and, unless asked for the analytical model alone, generates their Verilog and runs the tool
jobs (Yosys with DSP blocks allowed; with ``lut_only`` also without; with ``pnr`` nextpnr)
``jobs`` at a time, longest first, telling ``progress`` what runs and about how long is left.
:func:`sweep` does the same over a range of foldings.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bchw.core.intmodel import IntegerModel
from bchw.estimate.energy import SOURCE as ENERGY_SOURCE
from bchw.estimate.energy import energy_per_inference
from bchw.estimate.options import EstimateOptions
from bchw.jobs import Runner, run_jobs
from rtl_gen.baseline import mac_model
from rtl_gen.conv_plan import ConvDesignPlan, plan_network
from rtl_gen.manifest import Manifest
from rtl_gen.plan import DesignPlan, DotProduct, LayerFolding, default_folding

RESOURCE_KEYS = ("lut", "ff", "carry", "lutram", "bram", "dsp")
SWEEP_BUDGETS = (32, 64, 128, 256, 512, 1024)  # synapses per cycle; 1024 is the default
DESIGNS = ("binary", "mac")

# About how long a Yosys run takes on this project's 2-core machines, per thousand of the
# analytical model's LUTs and flip-flops of the design it maps, and per DSP block it infers
# (docs/benchmarks.md, "How long estimates take"). Only the time-left estimate uses it; it is
# rescaled by the runs that finish.
SECONDS_PER_KCELL = {"ice40": 4.9, "ecp5": 2.3, "xc7": 3.0, "gowin": 2.5}
SECONDS_PER_DSP = {"ice40": 0.25, "ecp5": 0.05, "xc7": 0.1, "gowin": 0.1}
SECONDS_PER_NEXTPNR_KCELL = 6.0
SECONDS_PER_RUN = 3.0

# progress(message, runs done, runs in all, seconds left or None)
Progress = Callable[[str, int, int, float | None], None]


@dataclass(frozen=True)
class _Job:
    design: str  # "binary" or "mac"
    target: str
    dsp: bool
    pnr: bool = False
    folding: int = 0  # which folding of a sweep

    def describe(self) -> str:
        step = "place and route" if self.pnr else "synthesis"
        return f"{step} {self.design} {self.target}" + ("" if self.dsp else " LUT-only")


def images_per_second(clock_mhz: float | None, interval: int) -> int | None:
    """Images per second at ``clock_mhz`` and an initiation interval of ``interval`` cycles."""
    return None if clock_mhz is None else round(clock_mhz * 1e6 / interval)


def design_plans(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int,
    options: EstimateOptions,
    timing_progress: Callable[[int], None] | None = None,
    mac_folding: list[LayerFolding] | None = None,
) -> dict[str, DesignPlan | ConvDesignPlan]:
    """The binary design and its MAC baseline (the same pipelining; the same folding unless
    ``mac_folding`` gives the baseline its own, as ``--fit`` does for each design).
    ``timing_progress`` hears a large CNN's cycle model (the binary design's timing)."""
    mac_unit = DotProduct.mac(options.weight_bits)
    return {
        "binary": plan_network(
            model, folding, pipeline_every, DotProduct.binary(options.adder_tree), timing_progress
        ),
        "mac": plan_network(
            mac_model(model, options.weight_bits), mac_folding or folding, pipeline_every, mac_unit
        ),
    }


def _analytic(parts: list[dict], target: str, coefficients: dict) -> dict[str, Any]:
    from bchw.estimate.analytic import resources

    dsp = resources(parts, target, True, coefficients)
    nodsp = resources(parts, target, False, coefficients)
    total = dict(dsp["total"])
    total.update({f"{k}_nodsp": nodsp["total"][k] for k in ("lut", "ff", "carry", "dsp")})
    layers = []
    for a, b in zip(dsp["parts"], nodsp["parts"], strict=True):
        layers.append(a | {f"{k}_nodsp": b[k] for k in ("lut", "ff", "carry", "dsp")})
    return {"total": total, "layers": layers}


def predicted_seconds(job: _Job, figures: dict[str, Any]) -> float:
    """About how long ``job`` takes, from the analytical model's figures of its design."""
    if job.pnr:
        return SECONDS_PER_RUN + SECONDS_PER_NEXTPNR_KCELL * (figures["lut"] + figures["ff"]) / 1e3
    if job.dsp:
        cells = figures["lut"] + figures["ff"]
        seconds = SECONDS_PER_KCELL[job.target] * cells / 1e3
        seconds += SECONDS_PER_DSP[job.target] * figures["dsp"]
    else:  # the MAC design's multipliers in LUTs: what makes these runs long
        cells = figures["lut_nodsp"] + figures["ff_nodsp"]
        seconds = SECONDS_PER_KCELL[job.target] * cells / 1e3
    return SECONDS_PER_RUN + seconds


def run_tool(job: _Job, verilog: Path, manifest: Manifest, device: str | None, work: Path) -> dict:
    """One tool run (a job of :func:`bchw.jobs.run_jobs`: it runs in a worker process)."""
    from bchw.estimate.pnr import place_and_route_design
    from bchw.estimate.synth import synthesize

    if job.pnr:
        return place_and_route_design(verilog, manifest, job.target, device, work, job.dsp)
    return synthesize(verilog, manifest.top, job.target, job.dsp, work)


def _run_all(
    jobs: list[_Job],
    predicted: dict[_Job, float],
    calls: dict[_Job, tuple],
    runner: Runner,
    progress: Progress | None,
) -> dict[_Job, dict]:
    """Run the tool jobs on ``runner``, the longest (predicted) first, so that the last to
    finish is a short one; ``progress`` names the runs in flight and the time left, from the
    predictions rescaled by the runs that finished. The first failure cancels the runs not
    yet started; the runs that finished are in the tools' caches, so a rerun resumes."""
    running: dict[_Job, float] = {}
    finished: dict[_Job, float] = {}
    results: dict[_Job, dict] = {}
    order = sorted(jobs, key=lambda job: -predicted[job])
    at_once = max(1, runner.jobs if not runner.scheduler else len(jobs))

    def seconds_left() -> float:
        # Runs served from the cache take no time and say nothing about the others.
        measured = [j for j in finished if finished[j] > 1.0]
        scale = (
            sum(finished[j] for j in measured) / sum(predicted[j] for j in measured)
            if measured
            else 1.0
        )
        now = time.monotonic()
        waiting = sum(predicted[j] for j in jobs if j not in finished and j not in running)
        left = scale * waiting
        left += sum(max(0.0, scale * predicted[j] - (now - t)) for j, t in running.items())
        return left / max(1, min(at_once, len(jobs)))

    def tell() -> None:
        if progress:
            names = ", ".join(j.describe() for j in running) if running else "done"
            message = f"running {names}" if running else names
            progress(message, len(finished), len(jobs), seconds_left())

    def started(index: int) -> None:
        running[order[index]] = time.monotonic()
        tell()

    def done(index: int, result: dict) -> None:
        job = order[index]
        finished[job] = time.monotonic() - running.pop(job, time.monotonic())
        results[job] = result
        tell()

    run_jobs(run_tool, (), [calls[job] for job in order], runner, done, started)
    return results


@dataclass
class _Prepared:
    """One folding's two designs, planned and counted, and the tool jobs they need."""

    plans: dict[str, DesignPlan | ConvDesignPlan]
    analytic: dict[str, dict[str, Any]]
    intervals: dict[str, int]
    latency: int
    main_dsp: dict[str, bool]
    jobs: list[_Job]
    coefficients: dict[str, Any]


def _prepare(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int,
    options: EstimateOptions,
    timing_progress: Callable[[int], None] | None = None,
    mac_folding: list[LayerFolding] | None = None,
    index: int = 0,
) -> _Prepared:
    from bchw.estimate.analytic import design_counts, load_coefficients
    from bchw.estimate.pnr import DEVICES

    plans = design_plans(model, folding, pipeline_every, options, timing_progress, mac_folding)
    coefficients = load_coefficients()
    parts = {name: design_counts(plan) for name, plan in plans.items()}
    analytic = {
        name: {t: _analytic(parts[name], t, coefficients) for t in options.targets}
        for name in plans
    }
    # Each design's own flow: DSP blocks allowed (the families' default), except for a MAC
    # design that --fit put in LUTs (its chip has too few DSP blocks for it).
    main_dsp = {"binary": True, "mac": options.mac_dsp}
    jobs: list[_Job] = []
    if options.synth:
        for target in options.targets:
            for design in _tool_designs(options):
                jobs.append(_Job(design, target, main_dsp[design], folding=index))
                if options.lut_only and main_dsp[design]:
                    jobs.append(_Job(design, target, False, folding=index))
        if options.pnr:
            jobs += [
                _Job(d, t, main_dsp[d], True, folding=index)
                for t in options.targets
                if t in DEVICES
                for d in _tool_designs(options)
            ]
    return _Prepared(
        plans=plans,
        analytic=analytic,
        intervals={name: plan.initiation_interval for name, plan in plans.items()},
        latency=plans["binary"].latency,
        main_dsp=main_dsp,
        jobs=jobs,
        coefficients=coefficients,
    )


def _tool_designs(options: EstimateOptions) -> tuple[str, ...]:
    """The designs the tools run on (the MAC one unless --fit found it fits nowhere)."""
    return DESIGNS if options.mac_tools else ("binary",)


def _tool_calls(
    prepared: _Prepared, options: EstimateOptions, designs_dir: Path, work: Path
) -> tuple[dict[_Job, tuple], dict[_Job, float]]:
    """Generate the designs the jobs need (reused where the same plan wrote them) and return
    each job's call and predicted seconds."""
    from rtl_gen.generate import generate_cached

    designs = {
        name: generate_cached(plan, designs_dir / name)[0] for name, plan in prepared.plans.items()
    }
    calls, predicted = {}, {}
    for job in prepared.jobs:
        design = designs[job.design]
        device = options.devices.get(job.target)
        calls[job] = (job, design.verilog.resolve(), design.manifest, device, work.resolve())
        predicted[job] = predicted_seconds(job, prepared.analytic[job.design][job.target]["total"])
    return calls, predicted


def estimate(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int,
    options: EstimateOptions,
    out_dir: Path,
    progress: Progress | None = None,
    timing_progress: Callable[[int], None] | None = None,
    mac_folding: list[LayerFolding] | None = None,
) -> dict[str, Any]:
    """Resources of ``model``'s binary design and its MAC baseline for every target (the
    baseline at ``folding`` too, unless ``mac_folding`` gives its own).

    Returns ``{"binary": {target: entry}, "mac": {target: entry}, "ratio": ..., ...}``; an
    entry holds ``lut, ff, carry, lutram, bram, dsp`` (the family's default synthesis, DSP
    blocks allowed), ``lut_nodsp, ff_nodsp, carry_nodsp, dsp_nodsp`` (the LUT-only run, None
    without ``options.lut_only``), ``logic_nodsp`` (the LUT-only run's LUTs with those inside
    carry cells), ``analytic`` (the analytical model's figures and per-layer breakdown), and
    with place and route ``device, fits, fmax_mhz, images_per_second, utilization``.
    """
    from rtl_gen.tools import prepare_yosys

    out_dir = Path(out_dir)
    prepared = _prepare(model, folding, pipeline_every, options, timing_progress, mac_folding)
    results: dict[_Job, dict] = {}
    if prepared.jobs:
        preparing = prepare_yosys()  # while the Verilog is generated
        calls, predicted = _tool_calls(prepared, options, out_dir / "designs", out_dir / "synth")
        preparing.join()
        results = _run_all(prepared.jobs, predicted, calls, options.runner, progress)
    return _assemble(model, folding, pipeline_every, options, prepared, results)


def _assemble(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int,
    options: EstimateOptions,
    prepared: _Prepared,
    results: dict[_Job, dict],
) -> dict[str, Any]:
    """The report of one folding from its plans, counts and tool results."""
    plans, analytic, intervals = prepared.plans, prepared.analytic, prepared.intervals
    interval, latency = intervals["binary"], prepared.latency
    main_dsp, coefficients = prepared.main_dsp, prepared.coefficients
    index = prepared.jobs[0].folding if prepared.jobs else 0

    report: dict[str, Any] = {
        "model": {"sha256": model.sha256, "arch": model.arch()},
        "folding": [{"pe": f.pe, "simd": f.simd} for f in folding],
        "pipeline_every": pipeline_every,
        "adder_tree": options.adder_tree,
        "weight_bits": options.weight_bits,
        "initiation_interval_cycles": interval,
        "latency_cycles": latency,
        "source": "yosys" if options.synth else "analytic",
        "lut_only_source": "yosys" if options.synth and options.lut_only else "analytic",
    }
    for name in DESIGNS:
        report[name] = {}
        for target in options.targets:
            figures = analytic[name][target]
            entry: dict[str, Any]
            if options.synth and name in _tool_designs(options):
                main = results[_Job(name, target, main_dsp[name], folding=index)]
                lut_only = results.get(_Job(name, target, False, folding=index), {})
                entry = {k: main[k] for k in RESOURCE_KEYS}
                entry.update({f"{k}_nodsp": lut_only.get(k) for k in ("lut", "ff", "carry", "dsp")})
                entry["yosys_script"] = main["script"]
                entry["yosys_seconds"] = main.get("seconds")
                entry["yosys_script_nodsp"] = lut_only.get("script")
                entry["yosys_seconds_nodsp"] = lut_only.get("seconds")
            elif main_dsp[name]:
                entry = dict(figures["total"])
            else:  # the LUT-only flow is the design's own: its figures are the main ones
                entry = dict(figures["total"])
                entry.update({k: figures["total"][f"{k}_nodsp"] for k in ("lut", "ff", "carry")})
                entry["dsp"] = 0
            entry["multipliers_in_dsp"] = main_dsp[name] and entry["dsp"] > 0
            entry["folding"] = [{"pe": f.pe, "simd": f.simd} for f in plans[name].folding]
            entry["initiation_interval_cycles"] = intervals[name]
            entry["logic_nodsp"] = _logic(entry, target)
            entry["analytic"] = figures["total"]
            entry["layers"] = figures["layers"]
            pnr = results.get(_Job(name, target, main_dsp[name], True, folding=index))
            if pnr is not None:
                fmax = None if pnr["fmax_mhz"] is None else round(pnr["fmax_mhz"], 2)
                entry.update(
                    device=pnr["device"],
                    fits=pnr["fits"],
                    fmax_mhz=fmax,
                    utilization=pnr["utilization"],
                    nextpnr_seconds=pnr.get("seconds"),
                    critical_path=pnr.get("critical_path"),
                )
                if not pnr["fits"]:
                    entry["reason"] = pnr["reason"]
                # From the reported (rounded) fmax, so that the two figures agree.
                entry["images_per_second"] = images_per_second(fmax, intervals[name])
            report[name][target] = entry
    report["ratio"] = {
        target: {
            key: _ratio(report["mac"][target][key], report["binary"][target][key])
            for key in ("lut", "lut_nodsp", "logic_nodsp", "ff", "ff_nodsp", "bram")
        }
        | {
            "analytic_lut_nodsp": _ratio(
                report["mac"][target]["analytic"]["lut_nodsp"],
                report["binary"][target]["analytic"]["lut_nodsp"],
            )
        }
        for target in options.targets
    }
    report["images_per_second_at_clock"] = {
        "clock_mhz": options.clock_mhz,
        "images_per_second": images_per_second(options.clock_mhz, interval),
    }
    report["energy"] = {
        "binary": energy_per_inference(plans["binary"]),
        "mac": energy_per_inference(plans["mac"]),
        "source": ENERGY_SOURCE,
    }
    report["energy"]["ratio"] = _ratio(
        report["energy"]["mac"]["total_pj"], report["energy"]["binary"]["total_pj"]
    )
    report["analytic_error"] = {
        t: coefficients["error"][t]["check"] for t in options.targets if t in coefficients["error"]
    }
    return report


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _logic(entry: dict[str, Any], target: str) -> int | None:
    """LUT-only LUTs plus the LUTs inside carry cells (ECP5 and Gowin count those apart): the
    logic a design occupies, comparable across families and between designs whose adds map
    differently."""
    from bchw.estimate.synth import family

    if entry.get("lut_nodsp") is None:
        return None
    return family(target).luts_with_carry(entry["lut_nodsp"], entry["carry_nodsp"])


# -- sweep --------------------------------------------------------------------------------------


def sweep_foldings(model: IntegerModel) -> list[list[LayerFolding]]:
    """Distinct default foldings over a range of synapse budgets, slowest first."""
    seen, out = set(), []
    for budget in SWEEP_BUDGETS:
        folding = default_folding(model, budget)
        key = tuple((f.pe, f.simd) for f in folding)
        if key not in seen:
            seen.add(key)
            out.append(folding)
    return out


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """Which (cost, throughput) points no other point beats on both (lower cost, higher
    throughput, one of them strictly)."""
    return [
        not any(
            c2 <= c and t2 >= t and (c2 < c or t2 > t)
            for k, (c2, t2) in enumerate(points)
            if k != i
        )
        for i, (c, t) in enumerate(points)
    ]


def sweep(
    model: IntegerModel,
    pipeline_every: int,
    options: EstimateOptions,
    out_dir: Path,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """One row per folding of :func:`sweep_foldings`: interval, images per second at
    ``options.clock_mhz``, and each design's LUTs, LUT-only LUTs and DSP blocks per target
    (synthesized, or analytical with ``options.synth`` False); Pareto flags per design and
    target on (LUTs, images per second)."""
    from rtl_gen.tools import prepare_yosys

    out_dir = Path(out_dir)
    foldings = sweep_foldings(model)
    sub = dataclasses.replace(options, pnr=False)
    prepared = [
        _prepare(model, folding, pipeline_every, sub, index=index)
        for index, folding in enumerate(foldings)
    ]
    # Every folding's tool runs in one pool (one progress bar over all of them), each
    # folding's designs in a folder of their own.
    calls: dict[_Job, tuple] = {}
    predicted: dict[_Job, float] = {}
    if any(p.jobs for p in prepared):
        preparing = prepare_yosys()
        for index, p in enumerate(prepared):
            more_calls, more_predicted = _tool_calls(
                p, sub, out_dir / "designs" / f"sweep-{index}", out_dir / "synth"
            )
            calls.update(more_calls)
            predicted.update(more_predicted)
        preparing.join()
    jobs = [job for p in prepared for job in p.jobs]
    results = _run_all(jobs, predicted, calls, options.runner, progress) if jobs else {}
    rows = []
    for folding, p in zip(foldings, prepared, strict=True):
        report = _assemble(model, folding, pipeline_every, sub, p, results)
        row = {
            "folding": report["folding"],
            "initiation_interval_cycles": report["initiation_interval_cycles"],
            "images_per_second": report["images_per_second_at_clock"]["images_per_second"],
        }
        for name in DESIGNS:
            row[name] = {
                t: {k: report[name][t][k] for k in ("lut", "lut_nodsp", "ff", "bram", "dsp")}
                for t in options.targets
            }
        rows.append(row)
    for name in DESIGNS:
        for target in options.targets:
            for key in ("lut", "lut_nodsp"):
                costs = [r[name][target][key] for r in rows]
                if None in costs:  # no LUT-only runs: no front to mark
                    flags = [False] * len(rows)
                else:
                    flags = pareto(
                        [(c, r["images_per_second"]) for c, r in zip(costs, rows, strict=True)]
                    )
                for row, flag in zip(rows, flags, strict=True):
                    row[name][target][f"pareto_{key}"] = flag
    return rows
