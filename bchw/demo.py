"""``bchw demo``: the whole hardware chain on a shipped integer model, then a reproducibility
report of its training.

The chain runs on the integer model, the portable artefact: it checks the shipped file (it
validates and writes back byte for byte), measures its accuracy with the bit-exact reference,
generates its Verilog, cosimulates the test images bit for bit and estimates the binary design
against its 8-bit MAC baseline for ECP5 (Yosys for models of about the digits model's size; the
analytical model for larger ones, whose synthesis takes far longer than a demo should). Then,
for digits, it trains the model again from its recipe and reports whether the result is
identical and, where not, how it differs: float training is bit for bit only on the same CPU
kind with the same thread count (docs/reproduction.md), so a difference is reported, never a
failure.

The demo folding is smaller than ``bchw generate``'s default (:data:`DEMO_SYNAPSES_PER_CYCLE`)
so that synthesis takes about a minute. Every step is also a command of its own (``bchw
train/export/eval/generate/cosim/estimate``), for any model and folding.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bchw.errors import BchwError, first_line

# A folding of about this many binary synapses per cycle synthesizes in well under a minute per
# Yosys run for the digits network (the default folding, 1,024, takes minutes per run).
DEMO_SYNAPSES_PER_CYCLE = 64
# ECP5 alone: iCE40's flow maps the MAC design's multipliers to its DSP blocks five times more
# slowly (`bchw estimate --target ice40` runs it), and the demo must answer in minutes.
DEMO_TARGETS = ("ecp5",)
DEFAULT_LIMIT = 200  # test images cosimulated, except for digits (all 360)
# Yosys for models up to about the digits model's size (84,480 weights), else the analytical
# model (the demo's estimate of MNIST's 2.9 million weights would take Yosys well over 15 min).
DEMO_SYNTH_MAX_WEIGHTS = 200_000
SOURCE_NAMES = {"yosys": "Yosys", "analytic": "analytical"}


@dataclass(frozen=True)
class DemoOptions:
    """What ``bchw demo`` runs.

    Attributes
    ----------
    dataset:
        ``digits``, ``mnist`` or the path of an ``.npz`` archive.
    model:
        The integer model: a shipped one by name (``digits``, ``mnist``) or a ``.bchw`` file;
        None for the shipped model of ``dataset`` (an archive needs one named).
    data_dir:
        The MNIST folder (else ``$BCHW_DATA_DIR``).
    output:
        Folder for the Verilog, the cosimulation, the report and the retrained model.
    limit:
        Test images to cosimulate (None: digits all 360, others the first 200).
    synth:
        Resources from Yosys (True) or the analytical model (False); None: Yosys for models of
        up to :data:`DEMO_SYNTH_MAX_WEIGHTS` weights (digits), else the analytical model.
    reproduce:
        Train the digits model again from its recipe and compare (digits only).
    jobs:
        Yosys runs in parallel.
    sim:
        Simulator (None: ``$SIM``, else Verilator).
    """

    dataset: str = "digits"
    model: str | None = None
    data_dir: str | None = None
    output: Path = Path("build/demo")
    limit: int | None = None
    synth: bool | None = None
    reproduce: bool = True
    jobs: int = 2
    sim: str | None = None


@dataclass
class DemoResult:
    summary: dict[str, Any]
    ok: bool


def _step(say: Callable[[str], None], label: str, text: str) -> None:
    say(f"{label:<9} {text}")


def _load_model(options: DemoOptions):
    """The integer model the demo runs and how to name it."""
    from bchw.core import intmodel
    from bchw.core.data import is_archive
    from bchw.models import SHIPPED, load_shipped, shipped_file

    name = options.model
    if name is None:
        if is_archive(options.dataset):
            raise BchwError(
                "an archive needs --model: a .bchw file, or digits or mnist for a shipped model"
            )
        name = options.dataset
        if name not in SHIPPED:
            raise BchwError(
                f"bchw ships no model for {name} (only {', '.join(SHIPPED)}): pass --model FILE"
            )
    if name in SHIPPED:
        return load_shipped(name), shipped_file(name), name
    return intmodel.load(name), name, None


def run_demo(
    options: DemoOptions,
    say: Callable[[str], None] = print,
    estimate_progress: Callable[..., None] | None = None,
    cosim_progress: Callable[[dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run every stage; ``say`` gets one line per step. Raises BchwError on bad input."""
    import numpy as np

    from bchw.core import intmodel
    from bchw.core.data import load_dataset
    from bchw.core.evaluate import evaluate
    from bchw.estimate.options import EstimateOptions
    from bchw.estimate.report import write_report
    from bchw.estimate.run import estimate
    from bchw.outputs import make_output_dir
    from rtl_gen.generate import generate_cached
    from rtl_gen.plan import default_folding, folding_text, plan_design
    from sim.cosim import cosimulate, first_problem
    from sim.options import CosimOptions
    from sim.runner import choose_simulator

    model, model_name, shipped = _load_model(options)
    intmodel.require_mlp(model, "bchw demo")
    dataset = load_dataset(options.dataset, options.data_dir)
    dataset.check_model(model)
    # Yosys on the larger designs takes far longer than a demo should (MNIST's 2.9 Mbit of
    # weights, 23 Mbit in the MAC baseline): the analytical model answers unless asked.
    weights = sum(layer.weights.size for layer in model.layers)
    synth = options.synth if options.synth is not None else weights <= DEMO_SYNTH_MAX_WEIGHTS
    reproduce = options.reproduce and shipped == "digits" and options.dataset == "digits"
    estimate_options = EstimateOptions(targets=DEMO_TARGETS, synth=synth, jobs=options.jobs)
    estimate_options.check()
    sim = choose_simulator(options.sim)
    preparing = None
    if synth:
        from rtl_gen.tools import prepare_yosys

        # A missing Yosys is reported now, not after the cosimulation; its one-time start-up
        # (compiling it to machine code on a new machine) runs beside the next steps.
        preparing = prepare_yosys()
    out = make_output_dir(options.output)
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = round(now - since, 1)
        return now

    # 1. The integer model: validated on reading; writing it back gives the same bytes.
    t = time.perf_counter()
    written_back = intmodel.to_bytes(model)
    if model.sha256 and hashlib.sha256(written_back).hexdigest() != model.sha256:
        raise BchwError(f"{model_name} does not write back byte for byte: the writer changed")
    _step(
        say,
        "model",
        f"{model_name} (sha256 {model.sha256[:16]}...), {model.arch()}; valid, and written "
        "back byte for byte",
    )
    float_accuracy = _recorded_float_accuracy(model)

    # 2. Accuracy of the integer model (bit-exact reference) on the whole test split.
    accuracy, _ = evaluate(model, dataset.test, dataset=dataset.name, split_name="test")
    correct, integer_accuracy = accuracy.correct, accuracy.accuracy
    float_text = "-" if float_accuracy is None else f"{float_accuracy:.4f}"
    _step(
        say,
        "accuracy",
        f"integer {integer_accuracy:.4f} ({correct}/{len(dataset.test)} test images), "
        f"float {float_text} (binary weights, as recorded at export)",
    )
    t = lap("model", t)

    # 3. Verilog at the demo folding.
    folding = default_folding(model, DEMO_SYNAPSES_PER_CYCLE)
    plan = plan_design(model, folding)
    design, _ = generate_cached(plan, out / "rtl")
    _step(
        say,
        "verilog",
        f"{design.verilog} (PE/SIMD per layer {folding_text(folding, compact=True)}; "
        f"{design.manifest.initiation_interval_cycles} cycles per image, latency "
        f"{design.manifest.latency_cycles} cycles)",
    )
    t = lap("generate", t)

    # 4. Cosimulation against the reference, bit for bit.
    limit = options.limit
    if limit is None and dataset.name != "digits":
        limit = DEFAULT_LIMIT
    split = dataset.test.head(limit)
    _step(say, "cosim", f"{len(split)} {dataset.name} test images through {sim}")
    cosim = cosimulate(
        model,
        design.folder,
        split.images.astype(np.int64),
        split.labels.astype(np.int64),
        out / "cosim",
        CosimOptions(sim=sim),
        progress=cosim_progress,
        announce=lambda message: _step(say, "build", message),
    )
    matched = cosim.images - cosim.mismatches - cosim.missing_outputs
    _step(
        say,
        "cosim",
        f"{matched} of {cosim.images} outputs match the reference bit for bit "
        f"({cosim.mismatches} mismatches); {cosim.cycles_per_image or 0:.1f} cycles per image, "
        f"latency {cosim.latency_cycles} cycles",
    )
    if not cosim.passed:
        _step(say, "MISMATCH", first_problem(cosim))
    t = lap("cosim", t)

    # 5. Resources: the binary design and its 8-bit MAC baseline.
    source = "Yosys" if synth else "the analytical model"
    _step(say, "estimate", f"binary and 8-bit MAC designs on {', '.join(DEMO_TARGETS)} ({source})")
    if preparing is not None:
        preparing.join()
    report = estimate(
        model, folding, plan.pipeline_every, estimate_options, out / "estimate", estimate_progress
    )
    written = write_report(report, None, make_output_dir(out / "estimate"))
    t = lap("estimate", t)

    # 6. Reproducibility: train the shipped model again from its recipe and compare.
    reproduction = None
    if reproduce:
        try:
            reproduction = _reproduce_digits(model, dataset, out / "reproduce", say)
        except Exception as exc:  # a report, never a failure of the demo
            reproduction = {"error": f"{type(exc).__name__}: {first_line(exc)}"}
            _step(say, "reproduce", f"could not train the model again: {reproduction['error']}")
        lap("reproduce", t)

    summary = {
        "dataset": dataset.name,
        "model": model_name,
        "model_sha256": model.sha256,
        "arch": model.arch(),
        "float_accuracy": float_accuracy,
        "integer_accuracy": integer_accuracy,
        "test_images": len(dataset.test),
        "folding": [{"pe": f.pe, "simd": f.simd} for f in folding],
        "cosim": {
            "simulator": sim,
            "images": cosim.images,
            "mismatches": cosim.mismatches,
            "missing": cosim.missing_outputs,
            "passed": cosim.passed,
            "cycles_per_image": cosim.cycles_per_image,
            "latency_cycles": cosim.latency_cycles,
            "predicted_latency_cycles": cosim.predicted_latency_cycles,
        },
        "resources": {
            target: {
                name: {k: report[name][target][k] for k in ("lut", "ff", "bram", "dsp")}
                for name in ("binary", "mac")
            }
            | {
                "lut_ratio": report["ratio"][target]["lut"],
                "analytic_lut_only_ratio": report["ratio"][target]["analytic_lut_nodsp"],
                # No LUT-only synthesis in the demo (its MAC run is the long one): the
                # analytical model's LUT-only figures show what the multipliers cost.
                "analytic_lut_only": {
                    name: report[name][target]["analytic"]["lut_nodsp"]
                    for name in ("binary", "mac")
                },
            }
            for target in DEMO_TARGETS
        },
        "resource_source": report["source"],
        "reproduction": reproduction,
        "outputs": {
            "verilog": str(design.verilog),
            "manifest": str(design.manifest_path),
            "report": str(written["markdown"]),
            "report_json": str(written["json"]),
            "plots": [str(p) for p in written["plots"]],
        },
        "seconds": seconds | {"total": round(time.perf_counter() - started, 1)},
    }
    return DemoResult(summary, ok=cosim.passed)


def _recorded_float_accuracy(model) -> float | None:
    """The float model's test accuracy that export recorded in the model's provenance (None
    where it recorded none, or something that is not a number)."""
    metrics = model.provenance.get("float_metrics")
    test_error = metrics.get("test_error") if isinstance(metrics, dict) else None
    if isinstance(test_error, bool) or not isinstance(test_error, int | float):
        return None
    return round(1.0 - float(test_error), 6)


def _reproduce_digits(shipped, dataset, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Train the shipped digits model again from its recipe, export it, and say how the result
    compares with the shipped file."""

    from bchw.core import intmodel
    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.evaluate import evaluate, float_accuracies
    from bchw.core.export import export_checkpoint
    from bchw.core.options import ExportOptions, TrainConfig
    from bchw.core.train import train
    from bchw.models import RECIPES

    recipe = RECIPES["digits"]
    config = TrainConfig(
        dataset="digits", epochs=recipe.epochs, seed=recipe.seed, threads=recipe.threads
    )
    _step(
        say,
        "reproduce",
        f"training {config.resolved_arch()} on digits again: {config.epochs} epochs, seed "
        f"{config.seed}, {recipe.threads} torch threads (the recipe of models/digits.bchw, "
        f"trained on {recipe.machine})",
    )
    result = train(config, dataset, out, progress=False)
    checkpoint = load_checkpoint(result.checkpoint)
    model = export_checkpoint(checkpoint, dataset.train.images, ExportOptions())
    digest = intmodel.save(model, out / "digits.bchw")
    model = intmodel.load(out / "digits.bchw")
    identical = digest == shipped.sha256
    floats = float_accuracies(model, checkpoint, dataset.test)

    def integer_accuracy(m) -> float:
        return evaluate(m, dataset.test, dataset=dataset.name, split_name="test")[0].accuracy

    ours = {
        "best_epoch": result.best_epoch,
        "integer_accuracy": integer_accuracy(model),
        "float_accuracy": floats["binary"],
        "sha256": digest,
    }
    theirs = {
        "best_epoch": shipped.provenance.get("epoch"),
        "integer_accuracy": integer_accuracy(shipped),
        "float_accuracy": _recorded_float_accuracy(shipped),
        "sha256": shipped.sha256,
    }
    differing, total = _weight_bits_differing(model, shipped)
    report = {
        "identical": identical,
        "retrained": ours,
        "shipped": theirs,
        "weight_bits_differing": differing,
        "weight_bits": total,
        "threads": result.threads.threads,
        "seconds_per_epoch": round(result.seconds_per_epoch, 3),
        "model": str(out / "digits.bchw"),
    }
    if identical:
        _step(say, "reproduce", f"identical to models/digits.bchw (sha256 {digest[:16]}...)")
    else:
        _step(
            say,
            "reproduce",
            "differs from models/digits.bchw, as float training may on another CPU kind or "
            "thread count (the integer model is the portable artefact):",
        )
        _step(
            say,
            "",
            f"best epoch {ours['best_epoch']} (shipped {theirs['best_epoch']}); integer "
            f"accuracy {ours['integer_accuracy']:.4f} (shipped {theirs['integer_accuracy']:.4f}); "
            f"float {ours['float_accuracy']:.4f} (shipped {theirs['float_accuracy']:.4f}); "
            f"{differing:,} of {total:,} weight bits differ ({100 * differing / total:.1f} %)",
        )
    return report


def _weight_bits_differing(a, b) -> tuple[int, int]:
    """How many weights of two models of the same shape differ in sign, and how many there are."""
    differing = total = 0
    for la, lb in zip(a.layers, b.layers, strict=True):
        differing += int((la.weights != lb.weights).sum())
        total += la.weights.size
    return differing, total


def summary_table(summary: dict[str, Any]) -> str:
    """The demo's closing table (plain text, fixed width)."""
    c = summary["cosim"]
    fa = summary["float_accuracy"]
    source = SOURCE_NAMES[summary["resource_source"]]
    lines = [
        f"{'model':<22} {summary['arch']} ({summary['model']}), sha256 "
        f"{summary['model_sha256'][:16]}...",
        f"{'accuracy, float':<22} " + ("-" if fa is None else f"{fa:.4f}"),
        f"{'accuracy, integer':<22} {summary['integer_accuracy']:.4f} "
        f"({summary['test_images']} test images)",
        f"{'cosimulation':<22} {c['images'] - c['mismatches'] - c['missing']} of {c['images']} "
        f"bit-exact, {c['mismatches']} mismatches ({c['simulator']})",
        f"{'cycles per image':<22} {c['cycles_per_image'] or 0:.1f} (latency "
        f"{c['latency_cycles']}, manifest {c['predicted_latency_cycles']})",
        "",
        f"{'resources, ' + source:<22} {'LUT':>8} {'FF':>8} {'BRAM':>6} {'DSP':>5}   "
        f"{'LUT, no DSP (analytical)':>24}",
    ]
    for target, entry in summary["resources"].items():
        lut_only = entry["analytic_lut_only"]
        for name, label in (("binary", "binary"), ("mac", "MAC 8-bit")):
            e = entry[name]
            lines.append(
                f"{target + ' ' + label:<22} {e['lut']:>8,} {e['ff']:>8,} {e['bram']:>6,} "
                f"{e['dsp']:>5,}   {lut_only[name]:>24,}"
            )
        ratio = "-" if entry["lut_ratio"] is None else f"{entry['lut_ratio']:.2f}"
        only = entry["analytic_lut_only_ratio"]
        ratio_only = "-" if only is None else f"{only:.2f}"
        lines.append(
            f"{target + ' MAC / binary':<22} {ratio:>8} {'':>8} {'':>6} {'':>5}   {ratio_only:>24}"
        )
    r = summary.get("reproduction")
    if r is not None:
        verdict = (
            f"not done: {r['error']}"
            if "error" in r
            else "identical to the shipped model"
            if r["identical"]
            else f"differs: {r['weight_bits_differing']:,} of {r['weight_bits']:,} weight bits, "
            f"integer accuracy {r['retrained']['integer_accuracy']:.4f} (shipped "
            f"{r['shipped']['integer_accuracy']:.4f})"
        )
        lines += ["", f"{'retrained from recipe':<22} {verdict}"]
    o = summary["outputs"]
    lines += [
        "",
        f"{'verilog':<9} {o['verilog']}",
        f"{'report':<9} {o['report']}, {o['report_json']}",
        f"{'plots':<9} {', '.join(o['plots'])}",
    ]
    return "\n".join(lines)


__all__ = ["DEMO_SYNAPSES_PER_CYCLE", "DemoOptions", "DemoResult", "run_demo", "summary_table"]
