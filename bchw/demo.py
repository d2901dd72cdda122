"""``bchw demo``: the whole chain on one model, from training to a resource table.

digits (the embedded default, no download): train the shipped model again from its seed, export
it, check it is byte-identical to ``models/digits.bchw``, evaluate it, generate its Verilog,
cosimulate the whole test split bit-exact, and synthesize the binary design and its 8-bit MAC
baseline for iCE40 and ECP5. mnist: the same with the shipped ``models/mnist.bchw`` (training it
takes hours on a laptop CPU) on the first ``limit`` test images.

The demo folding is smaller than ``bchw generate``'s default (``DEMO_SYNAPSES_PER_CYCLE``) so
that the four Yosys runs take about two minutes on two cores. Every step is also a command of
its own (``bchw train/export/eval/generate/cosim/estimate``), for any model and folding.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bchw.errors import BchwError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"digits": REPO / "models" / "digits.bchw", "mnist": REPO / "models" / "mnist.bchw"}
# A folding of about this many binary synapses per cycle synthesizes in well under a minute per
# Yosys run for the digits network (the default folding, 1,024, takes several minutes per run).
DEMO_SYNAPSES_PER_CYCLE = 64
DEMO_TARGETS = ("ice40", "ecp5")
DEFAULT_MNIST_LIMIT = 200
SOURCE_NAMES = {"yosys": "Yosys", "analytic": "analytical"}


@dataclass(frozen=True)
class DemoOptions:
    dataset: str = "digits"
    data_dir: str | None = None
    output: Path = Path("build/demo")
    limit: int | None = None  # test images to cosimulate (mnist default: DEFAULT_MNIST_LIMIT)
    synth: bool | None = None  # Yosys (True) or the analytical model (False); None: by dataset
    jobs: int = 2
    sim: str | None = None


@dataclass
class DemoResult:
    summary: dict[str, Any]
    ok: bool


def _step(say: Callable[[str], None], label: str, text: str) -> None:
    say(f"{label:<9} {text}")


def run_demo(
    options: DemoOptions,
    say: Callable[[str], None] = print,
    estimate_progress: Callable[[str, int, int], None] | None = None,
    cosim_progress: Callable[[dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run every stage; ``say`` gets one line per step. Raises BchwError on bad input."""
    from bchw.core import intmodel, reference
    from bchw.core.data import load_dataset
    from bchw.estimate.run import EstimateOptions, estimate
    from bchw.estimate.report import write_report
    from bchw.outputs import make_output_dir
    from rtl_gen import generate as gen
    from sim.cosim import CosimOptions, cosimulate, first_problem
    from sim.runner import choose_simulator

    if options.dataset not in SHIPPED:
        raise BchwError(f"unknown dataset {options.dataset!r}: choose digits or mnist")
    dataset = load_dataset(options.dataset, options.data_dir)
    # Yosys on the MNIST designs takes far longer than a demo should (its 2.9 Mbit of weights,
    # 23 Mbit in the MAC baseline): the analytical model answers unless asked otherwise.
    synth = options.synth if options.synth is not None else options.dataset == "digits"
    shipped = SHIPPED[options.dataset]
    if not shipped.is_file():
        raise BchwError(f"the shipped model {shipped} is missing (a bchw checkout has it)")
    estimate_options = EstimateOptions(
        targets=DEMO_TARGETS, synth=synth, lut_only=False, jobs=options.jobs
    )
    estimate_options.check()
    sim = choose_simulator(options.sim)
    if synth:
        from rtl_gen.tools import yosys_executable

        yosys_executable()  # a missing Yosys is reported now, not after the cosimulation
    out = make_output_dir(options.output)
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = round(now - since, 1)
        return now

    # 1. The model: trained again (digits) or the shipped one (mnist).
    t = time.perf_counter()
    float_accuracy: float | None
    if options.dataset == "digits":
        model, float_accuracy, identical = _train_digits(dataset, out, say)
        model_path = out / "digits.bchw"
        note = "identical to" if identical else "DIFFERS from"
        _step(
            say,
            "model",
            f"{model_path} (sha256 {model.sha256[:16]}...), {note} {_shown(shipped)}",
        )
    else:
        model = intmodel.load(shipped)
        model_path = shipped
        identical = True
        test_error = model.provenance.get("float_metrics", {}).get("test_error")
        float_accuracy = None if test_error is None else 1.0 - float(test_error)
        _step(say, "model", f"{_shown(shipped)} (sha256 {model.sha256[:16]}...), {model.arch()}")
    if model.input_size != dataset.num_features:
        raise BchwError(f"{shipped} takes {model.input_size} inputs, not {dataset.num_features}")
    t = lap("model", t)

    # 2. Accuracy of the integer model (bit-exact reference) on the whole test split.
    result = reference.run(model, dataset.test.images)
    correct = int(np.count_nonzero(result.predicted == dataset.test.labels))
    integer_accuracy = correct / len(dataset.test)
    float_text = "-" if float_accuracy is None else f"{float_accuracy:.4f}"
    _step(
        say,
        "accuracy",
        f"integer {integer_accuracy:.4f} ({correct}/{len(dataset.test)} test images), "
        f"float {float_text} (binary weights)",
    )
    t = lap("reference", t)

    # 3. Verilog at the demo folding.
    folding = gen.default_folding(model, DEMO_SYNAPSES_PER_CYCLE)
    folding_text = ", ".join(f"{f.pe}/{f.simd}" for f in folding)
    design, _ = gen.generate_cached(model, folding, out / "rtl", gen.DEFAULT_PIPELINE_EVERY)
    manifest = json.loads((design / gen.MANIFEST_NAME).read_text())
    _step(
        say,
        "verilog",
        f"{design / gen.VERILOG_NAME} (PE/SIMD per layer {folding_text}; "
        f"{manifest['initiation_interval_cycles']} cycles per image, latency "
        f"{manifest['latency_cycles']} cycles)",
    )
    t = lap("generate", t)

    # 4. Cosimulation against the reference, bit for bit.
    limit = options.limit
    if limit is None and options.dataset == "mnist":
        limit = DEFAULT_MNIST_LIMIT
    split = dataset.test.head(limit)
    _step(say, "cosim", f"{len(split)} {options.dataset} test images through {sim}")
    cosim = cosimulate(
        model,
        design,
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

    # 5. Resources: Yosys on the binary design and its 8-bit MAC baseline.
    source = "Yosys" if synth else "the analytical model"
    _step(say, "estimate", f"binary and 8-bit MAC designs on {', '.join(DEMO_TARGETS)} ({source})")
    report = estimate(
        model,
        folding,
        gen.DEFAULT_PIPELINE_EVERY,
        estimate_options,
        out / "estimate",
        estimate_progress,
    )
    written = write_report(report, None, make_output_dir(out / "estimate"))
    lap("estimate", t)

    summary = {
        "dataset": options.dataset,
        "model": str(_shown(model_path)),
        "model_sha256": model.sha256,
        "identical_to_shipped": identical,
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
        },
        "resources": {
            target: {
                name: {k: report[name][target][k] for k in ("lut", "ff", "bram", "dsp")}
                for name in ("binary", "mac")
            }
            | {
                "lut_ratio": report["ratio"][target]["lut"],
                # No LUT-only synthesis in the demo (it doubles the time): the analytical
                # model's LUT-only figures show what the multipliers cost without DSP blocks.
                "analytic_lut_only": {
                    name: report[name][target]["analytic"]["lut_nodsp"]
                    for name in ("binary", "mac")
                },
            }
            for target in DEMO_TARGETS
        },
        "resource_source": report["source"],
        "outputs": {
            "verilog": str(design / gen.VERILOG_NAME),
            "manifest": str(design / gen.MANIFEST_NAME),
            "report": str(written["markdown"]),
            "report_json": str(written["json"]),
            "plots": [str(p) for p in written["plots"]],
        },
        "seconds": seconds | {"total": round(time.perf_counter() - started, 1)},
    }
    return DemoResult(summary, ok=cosim.passed and identical)


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when it lies inside it (shorter to read)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)


def _train_digits(dataset, out: Path, say: Callable[[str], None]):
    """Train the shipped digits model again from its seed; export; compare with models/."""
    from bchw.core import intmodel
    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.evaluate import float_accuracies
    from bchw.core.export import ExportOptions, export_checkpoint
    from bchw.core.train import DEFAULT_EPOCHS, TrainConfig, train

    config = TrainConfig(dataset="digits", epochs=DEFAULT_EPOCHS["digits"], seed=0)
    _step(
        say,
        "train",
        f"{config.resolved_arch()} on digits, {config.epochs} epochs, seed {config.seed} "
        f"(the recipe of {SHIPPED['digits'].name})",
    )
    result = train(config, dataset, out / "train", progress=False)
    _step(
        say,
        "train",
        f"best epoch {result.best_epoch}: validation error {100 * result.validation_error:.2f} %, "
        f"test error {100 * result.test_error:.2f} % ({result.seconds_per_epoch:.2f} s per epoch)",
    )
    checkpoint = load_checkpoint(result.checkpoint)
    model = export_checkpoint(checkpoint, dataset.train.images, ExportOptions())
    path = out / "digits.bchw"
    digest = intmodel.save(model, path)
    model = intmodel.load(path)
    identical = digest == intmodel.load(SHIPPED["digits"]).sha256
    float_accuracy = float_accuracies(model, checkpoint, dataset.test, dataset.input_scale)
    return model, float_accuracy["binary"], identical


def summary_table(summary: dict[str, Any]) -> str:
    """The demo's closing table (plain text, fixed width)."""
    c = summary["cosim"]
    fa = summary["float_accuracy"]
    source = SOURCE_NAMES[summary["resource_source"]]
    lines = [
        f"{'model':<22} {summary['arch']} ({summary['dataset']}), sha256 "
        f"{summary['model_sha256'][:16]}...",
        f"{'accuracy, float':<22} " + ("-" if fa is None else f"{fa:.4f}"),
        f"{'accuracy, integer':<22} {summary['integer_accuracy']:.4f} "
        f"({summary['test_images']} test images)",
        f"{'cosimulation':<22} {c['images'] - c['mismatches'] - c['missing']} of {c['images']} "
        f"bit-exact, {c['mismatches']} mismatches ({c['simulator']})",
        f"{'cycles per image':<22} {c['cycles_per_image'] or 0:.1f} (latency "
        f"{c['latency_cycles']})",
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
        ratio_only = f"{lut_only['mac'] / lut_only['binary']:.2f}"
        lines.append(
            f"{target + ' MAC / binary':<22} {ratio:>8} {'':>8} {'':>6} {'':>5}   {ratio_only:>24}"
        )
    o = summary["outputs"]
    lines += [
        "",
        f"{'verilog':<9} {o['verilog']}",
        f"{'report':<9} {o['report']}, {o['report_json']}",
        f"{'plots':<9} {', '.join(o['plots'])}",
    ]
    return "\n".join(lines)


__all__ = ["DEMO_SYNAPSES_PER_CYCLE", "DemoOptions", "DemoResult", "run_demo", "summary_table"]
