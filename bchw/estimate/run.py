"""``bchw estimate``: resources of the binary design and its MAC baseline."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bchw.estimate.energy import SOURCE as ENERGY_SOURCE
from bchw.estimate.energy import energy_per_inference
from bchw.errors import BchwError
from bchw.core.intmodel import IntegerModel
from rtl_gen.layer_engine import ADDER_TREES
from rtl_gen.mac import DEFAULT_WEIGHT_BITS, WEIGHT_BITS, mac_model

# Designs that fit (role "fit") and check (role "check") the analytical model: synthetic models
# of varied shapes, foldings (unrolled, folded, FIFO and vector-buffer links), activation widths,
# scale terms and MAC weight widths, each small enough to synthesize in well under a minute.
CALIBRATION_DESIGNS: list[dict[str, Any]] = [
    {"name": "c01", "role": "fit", "sizes": [64, 32, 10], "act": 8, "pe": [4, 2], "simd": [16, 4]},
    {
        "name": "c02",
        "role": "check",
        "sizes": [32, 16, 8],
        "act": 8,
        "pe": [16, 8],
        "simd": [32, 16],
    },
    {"name": "c03", "role": "fit", "sizes": [128, 64, 10], "act": 8, "pe": [8, 2], "simd": [16, 8]},
    {
        "name": "c04",
        "role": "check",
        "sizes": [100, 50, 10],
        "act": 6,
        "pe": [5, 3],
        "simd": [20, 10],
    },
    {
        "name": "c05",
        "role": "fit",
        "sizes": [64, 64, 64, 10],
        "act": 8,
        "pe": [8, 8, 2],
        "simd": [8, 8, 8],
    },
    {
        "name": "c06",
        "role": "check",
        "sizes": [256, 32, 10],
        "act": 4,
        "terms": 1,
        "pe": [2, 10],
        "simd": [64, 2],
    },
    {
        "name": "c07",
        "role": "fit",
        "sizes": [48, 24, 10],
        "act": 8,
        "terms": 3,
        "pe": [24, 5],
        "simd": [48, 8],
    },
    {
        "name": "c08",
        "role": "check",
        "sizes": [64, 32, 10],
        "act": 4,
        "pe": [8, 2],
        "simd": [8, 8],
        "bits": 4,
    },
    {
        "name": "c10",
        "role": "check",
        "sizes": [64, 48, 10],
        "act": 8,
        "pe": [4, 4],
        "simd": [32, 4],
        "pipe": 1,
    },
    {
        "name": "c11",
        "role": "fit",
        "sizes": [16, 16, 10],
        "act": 6,
        "pe": [16, 10],
        "simd": [16, 16],
    },
    # Few PEs with many synapses each (the shipped digits model's last layer, 1 x 32, is one).
    {"name": "c12", "role": "fit", "sizes": [128, 32, 10], "act": 6, "pe": [2, 4], "simd": [32, 8]},
]


def calibration_design(spec: dict[str, Any]):
    """The synthetic model and folding a calibration spec describes."""
    from bchw.core.synthetic import random_model
    from rtl_gen.network import LayerFolding

    model = random_model(
        spec["sizes"],
        seed=int(spec["name"][1:]),
        input_bits=8,
        act_bits=spec["act"],
        out_bits=spec["act"],
        terms=spec.get("terms", 2),
    )
    folding = [LayerFolding(p, s) for p, s in zip(spec["pe"], spec["simd"], strict=True)]
    return model, folding


# -- the estimate -------------------------------------------------------------------------------

DEFAULT_TARGETS = ("ice40", "ecp5")
DEFAULT_CLOCK_MHZ = 100.0
RESOURCE_KEYS = ("lut", "ff", "carry", "lutram", "bram", "dsp")
SWEEP_BUDGETS = (32, 64, 128, 256, 512, 1024)  # synapses per cycle; 1024 is the default


@dataclass
class EstimateOptions:
    """What ``bchw estimate`` runs.

    ``synth`` False answers from the analytical model alone; ``pnr`` also places and routes
    (iCE40 and ECP5); ``devices`` overrides a family's default device; ``clock_mhz`` gives images
    per second where no place and route measured fmax; ``lut_only`` False skips the LUT-only
    runs (half the synthesis time; the report's ``*_nodsp`` figures are then None).
    """

    targets: tuple[str, ...] = DEFAULT_TARGETS
    weight_bits: int = DEFAULT_WEIGHT_BITS
    synth: bool = True
    pnr: bool = False
    devices: dict[str, str] = field(default_factory=dict)
    clock_mhz: float = DEFAULT_CLOCK_MHZ
    jobs: int = 1
    lut_only: bool = True
    adder_tree: str = "xor"

    def check(self) -> None:
        from bchw.estimate.synth import DEVICES, FAMILIES, device

        if not self.targets:
            raise BchwError("name at least one --target")
        for target in self.targets:
            if target not in FAMILIES:
                known = ", ".join(FAMILIES)
                raise BchwError(f"unknown target {target!r}: choose from {known}")
        if self.weight_bits not in WEIGHT_BITS:
            raise BchwError(f"--weight-bits must be one of {WEIGHT_BITS}, got {self.weight_bits}")
        if self.pnr and not self.synth:
            raise BchwError("--pnr places synthesized netlists: it cannot go with --analytic")
        if self.pnr and not any(t in DEVICES for t in self.targets):
            raise BchwError("--pnr needs an ice40 or ecp5 target (nextpnr for those families)")
        for family_name, name in self.devices.items():
            if family_name not in self.targets:
                raise BchwError(f"--device {family_name}={name}: {family_name} is not a --target")
            device(family_name, name)
        if not self.clock_mhz > 0:
            raise BchwError(f"--clock-mhz must be positive, got {self.clock_mhz}")
        if self.jobs < 1:
            raise BchwError(f"--jobs must be at least 1, got {self.jobs}")
        if self.adder_tree not in ADDER_TREES:
            known = ", ".join(ADDER_TREES)
            raise BchwError(f"--adder-tree must be one of {known}, got {self.adder_tree}")


@dataclass(frozen=True)
class _Job:
    design: str  # "binary" or "mac"
    target: str
    dsp: bool
    pnr: bool = False


def _run_job(job: _Job, verilog: Path, manifest: dict, work: Path, options: EstimateOptions):
    from bchw.estimate import synth

    if not job.pnr:
        return synth.synthesize(verilog, manifest["top"], job.target, job.dsp, work)
    return place_and_route_design(
        verilog, manifest, job.target, options.devices.get(job.target), work
    )


def images_per_second(clock_mhz: float | None, interval: int) -> int | None:
    """Images per second at ``clock_mhz`` and an initiation interval of ``interval`` cycles."""
    return None if clock_mhz is None else round(clock_mhz * 1e6 / interval)


def place_and_route_design(
    verilog: Path, manifest: dict, target: str, device_name: str | None, work: Path
) -> dict[str, Any]:
    """A generated design synthesized inside the seven-pin shell (DSP blocks allowed) and
    placed and routed with nextpnr on ``target``'s device (its default when ``None``)."""
    from bchw.estimate import synth

    widths = {port["name"]: port["width"] for port in manifest["ports"]}
    wrapper = synth.pnr_wrapper(widths["i__payload"], widths["o__payload"], manifest["top"])
    netlist = synth.synthesize(
        verilog, synth.PNR_TOP, target, True, work, extra_verilog=wrapper, netlist=True
    )
    part = synth.device(target, device_name)
    return synth.place_and_route(Path(netlist["netlist"]), part, work)


def _describe(job: _Job) -> str:
    step = "place and route" if job.pnr else "synthesis"
    return f"{step} {job.design} {job.target}" + ("" if job.dsp else " LUT-only")


def _run_all(jobs, designs, manifests, work, options, results, progress) -> None:
    """Run the tool jobs ``options.jobs`` at a time; ``progress(message, done, total)`` names
    the runs in flight. The first failure cancels the runs not yet started."""
    lock = threading.Lock()
    running: list[str] = []
    finished = [0]

    def tell() -> None:
        if progress:
            progress("running " + ", ".join(running) if running else "done", finished[0], len(jobs))

    def run(job: _Job):
        with lock:
            running.append(_describe(job))
            tell()
        try:
            return _run_job(job, designs[job.design], manifests[job.design], work, options)
        finally:
            with lock:
                running.remove(_describe(job))

    pool = ThreadPoolExecutor(options.jobs)
    try:
        futures = {pool.submit(run, job): job for job in jobs}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            with lock:
                finished[0] += 1
                tell()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def estimate(
    model: IntegerModel,
    folding: list,
    pipeline_every: int,
    options: EstimateOptions,
    out_dir: Path,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Resources of ``model``'s binary design and its MAC baseline for every target.

    Returns ``{"binary": {target: entry}, "mac": {target: entry}, "ratio": ..., ...}``; an
    entry holds ``lut, ff, carry, lutram, bram, dsp`` (the family's default synthesis, DSP
    blocks allowed), ``lut_nodsp, ff_nodsp, carry_nodsp, dsp_nodsp`` (the LUT-only run),
    ``logic_nodsp`` (the LUT-only run's LUTs with those inside carry cells), ``analytic``
    (the analytical model's figures and per-layer breakdown), and with place and route
    ``device, fits, fmax_mhz, images_per_second, utilization``.
    """
    from bchw.estimate.analytic import design_counts, load_coefficients
    from rtl_gen import generate as gen

    out_dir = Path(out_dir)
    mac = mac_model(model, options.weight_bits)
    models = {"binary": model, "mac": mac}
    coefficients = load_coefficients()
    designs, manifests, analytic = {}, {}, {}
    for name, m in models.items():
        # The MAC baseline has no binary tree: its designs are the same whatever adder_tree says.
        tree = options.adder_tree if name == "binary" else "xor"
        if options.synth:
            folder, _ = gen.generate_cached(
                m, folding, out_dir / "designs" / name, pipeline_every, tree
            )
            designs[name] = folder / gen.VERILOG_NAME
            manifests[name] = json.loads((folder / gen.MANIFEST_NAME).read_text())
        bits = options.weight_bits if name == "mac" else 1
        parts = design_counts(m, folding, pipeline_every, bits, tree)
        analytic[name] = {t: _analytic(parts, t, coefficients) for t in options.targets}
    interval, latency = gen.design_timing(model, folding, pipeline_every)

    jobs: list[_Job] = []
    if options.synth:
        for target in options.targets:
            flows = (True, False) if options.lut_only else (True,)
            jobs += [_Job(design, target, dsp) for design in models for dsp in flows]
        if options.pnr:
            from bchw.estimate.synth import DEVICES

            jobs += [
                _Job(d, t, True, True) for t in options.targets if t in DEVICES for d in models
            ]
    results: dict[_Job, dict] = {}
    work = out_dir / "synth"
    if jobs:
        _run_all(jobs, designs, manifests, work, options, results, progress)

    report: dict[str, Any] = {
        "model": {"sha256": model.sha256, "arch": model.arch()},
        "folding": [{"pe": f.pe, "simd": f.simd} for f in folding],
        "pipeline_every": pipeline_every,
        "adder_tree": options.adder_tree,
        "weight_bits": options.weight_bits,
        "initiation_interval_cycles": interval,
        "latency_cycles": latency,
        "source": "yosys" if options.synth else "analytic",
    }
    for name in models:
        report[name] = {}
        for target in options.targets:
            figures = analytic[name][target]
            entry: dict[str, Any]
            if options.synth:
                main = results[_Job(name, target, True)]
                lut_only = results.get(_Job(name, target, False), {})
                entry = {k: main[k] for k in RESOURCE_KEYS}
                entry.update({f"{k}_nodsp": lut_only.get(k) for k in ("lut", "ff", "carry", "dsp")})
                entry["yosys_script"] = main["script"]
                entry["yosys_seconds"] = main.get("seconds")
                entry["yosys_script_nodsp"] = lut_only.get("script")
                entry["yosys_seconds_nodsp"] = lut_only.get("seconds")
            else:
                entry = {k: v for k, v in figures["total"].items()}
            entry["logic_nodsp"] = _logic(entry, target)
            entry["analytic"] = figures["total"]
            entry["layers"] = figures["layers"]
            pnr = results.get(_Job(name, target, True, True))
            if pnr is not None:
                fmax = None if pnr["fmax_mhz"] is None else round(pnr["fmax_mhz"], 2)
                entry.update(
                    device=pnr["device"],
                    fits=pnr["fits"],
                    fmax_mhz=fmax,
                    utilization=pnr["utilization"],
                    nextpnr_seconds=pnr.get("seconds"),
                )
                if not pnr["fits"]:
                    entry["reason"] = pnr["reason"]
                # From the reported (rounded) fmax, so that the two figures agree.
                entry["images_per_second"] = images_per_second(fmax, interval)
            report[name][target] = entry
    report["ratio"] = {
        target: {
            key: _ratio(report["mac"][target][key], report["binary"][target][key])
            for key in ("lut", "lut_nodsp", "logic_nodsp", "ff", "ff_nodsp", "bram")
        }
        for target in options.targets
    }
    report["images_per_second_at_clock"] = {
        "clock_mhz": options.clock_mhz,
        "images_per_second": images_per_second(options.clock_mhz, interval),
    }
    report["energy"] = {
        "binary": energy_per_inference(model, folding, 1),
        "mac": energy_per_inference(mac, folding, options.weight_bits),
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


def sweep_foldings(model: IntegerModel) -> list[list]:
    """Distinct default foldings over a range of synapse budgets, slowest first."""
    from rtl_gen import generate as gen

    seen, out = set(), []
    for budget in SWEEP_BUDGETS:
        folding = gen.default_folding(model, budget)
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
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per folding of :func:`sweep_foldings`: interval, images per second at
    ``options.clock_mhz``, and each design's LUTs, LUT-only LUTs and DSP blocks per target
    (synthesized, or analytical with ``options.synth`` False); Pareto flags per design and
    target on (LUTs, images per second)."""
    import dataclasses

    foldings = sweep_foldings(model)
    rows = []
    for index, folding in enumerate(foldings):

        def step(message: str, done: int, total: int, index=index) -> None:
            if progress:
                progress(f"folding {index + 1}/{len(foldings)}: {message}", done, total)

        sub = dataclasses.replace(options, pnr=False)
        report = estimate(model, folding, pipeline_every, sub, out_dir, step)
        row = {
            "folding": report["folding"],
            "initiation_interval_cycles": report["initiation_interval_cycles"],
            "images_per_second": report["images_per_second_at_clock"]["images_per_second"],
        }
        for name in ("binary", "mac"):
            row[name] = {
                t: {k: report[name][t][k] for k in ("lut", "lut_nodsp", "ff", "bram", "dsp")}
                for t in options.targets
            }
        rows.append(row)
        if progress:
            progress(f"folding {index + 1}/{len(foldings)} done", 1, 1)
    for name in ("binary", "mac"):
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
