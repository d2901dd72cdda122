"""``bchw cosim``: stream images through the generated Verilog and compare with the reference.

One call: read the design's manifest, check it belongs to the model, build the harness (or reuse
the cached build), stream the images, compare every output bit for bit (in the testbench), and on
the first mismatch replay the images up to it with a waveform of the failing image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bchw import reference
from bchw.errors import BchwError
from bchw.intmodel import IntegerModel
from sim import runner
from sim.checker import describe
from sim.harness import Ports, pack_outputs, read_manifest

MAX_STALL = 0.95
WAVE_MARGIN_CYCLES = 16


@dataclass(frozen=True)
class CosimOptions:
    sim: str = runner.DEFAULT_SIMULATOR
    stall: float = 0.0
    seed: int = 1
    waves: bool = False  # a waveform of the whole run
    waves_on_mismatch: bool = True  # replay up to the first mismatch with a waveform of it
    stop_at_first_mismatch: bool = False

    def check(self) -> None:
        if not 0.0 <= self.stall <= MAX_STALL:
            raise BchwError(f"--stall must lie in 0..{MAX_STALL}, got {self.stall}")
        if not 0 <= self.seed < 1 << 32:
            raise BchwError(f"--seed must lie in 0..2^32-1, got {self.seed}")


@dataclass
class CosimReport:
    """What ``bchw cosim --json`` prints (``to_json``)."""

    model_sha256: str
    design: str
    simulator: str
    stall: float
    seed: int
    images: int
    outputs: int
    mismatches: int
    missing_outputs: int
    extra_outputs: int
    stalled: bool
    first_mismatch: dict[str, Any] | None
    labelled: int  # inputs with a label (data-set images; not stress vectors)
    correct: int  # labelled inputs whose hardware class equals the label
    reference_correct: int  # ... whose reference class does
    latency_cycles: int | None
    initiation_interval_cycles: int | None
    cycles_per_image: float | None
    predicted_latency_cycles: int
    predicted_initiation_interval_cycles: int
    simulated_cycles: int
    gap_cycles: int  # cycles the input withheld a beat it had (--stall)
    backpressure_cycles: int  # cycles the output refused a valid result (--stall)
    build_seconds: float
    run_seconds: float
    waveform: str | None = None
    summary: str = ""
    names: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.mismatches == 0
            and self.missing_outputs == 0
            and self.extra_outputs == 0
            and not self.stalled
            and self.outputs == self.images
        )

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    @property
    def reference_accuracy(self) -> float | None:
        return self.reference_correct / self.labelled if self.labelled else None

    @property
    def images_per_second(self) -> float:
        return self.outputs / self.run_seconds if self.run_seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "model_sha256": self.model_sha256,
            "design": self.design,
            "simulator": self.simulator,
            "stall": self.stall,
            "seed": self.seed,
            "images": self.images,
            "outputs": self.outputs,
            "mismatches": self.mismatches,
            "missing_outputs": self.missing_outputs,
            "extra_outputs": self.extra_outputs,
            "stream_stopped": self.stalled,
            "first_mismatch": self.first_mismatch,
            "accuracy": self.accuracy,
            "labelled_images": self.labelled,
            "reference_accuracy": self.reference_accuracy,
            "cycles_per_image": self.cycles_per_image,
            "latency_cycles": self.latency_cycles,
            "predicted_latency_cycles": self.predicted_latency_cycles,
            "initiation_interval_cycles": self.initiation_interval_cycles,
            "predicted_initiation_interval_cycles": self.predicted_initiation_interval_cycles,
            "simulated_cycles": self.simulated_cycles,
            "gap_cycles": self.gap_cycles,
            "backpressure_cycles": self.backpressure_cycles,
            "images_per_second": round(self.images_per_second, 2),
            "build_seconds": round(self.build_seconds, 2),
            "run_seconds": round(self.run_seconds, 2),
            "waveform": self.waveform,
            "summary": self.summary,
        }


def check_design_matches(ports: Ports, model: IntegerModel, design: Path) -> None:
    if ports.model_sha256 != model.sha256:
        raise BchwError(
            f"design {design} was generated from model {ports.model_sha256[:12]}, not from this "
            f"model ({model.sha256[:12]})"
        )


def cosimulate(
    model: IntegerModel,
    design: Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    work_dir: Path,
    options: CosimOptions,
    names: list[str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    announce: Callable[[str], None] | None = None,
) -> CosimReport:
    """Cosimulate the design in folder ``design`` (bchw_network.v + manifest.json) on
    ``images``; outputs, builds and waveforms go under ``work_dir``. ``labels``: one class per
    image, -1 where an input has none (or None: no labels at all)."""
    options.check()
    ports = read_manifest(design / "manifest.json")
    check_design_matches(ports, model, design)
    verilog = design / "bchw_network.v"
    if not verilog.is_file():
        raise BchwError(f"design folder {design} has no bchw_network.v")
    if len(images) == 0:
        raise BchwError("no images to simulate")
    ref = reference.run(model, images)
    expected = pack_outputs(ref.scores, ref.predicted, ports)
    work_dir = Path(work_dir)
    built = runner.build(
        verilog, ports, options.sim, work_dir / "builds", waves=options.waves, announce=announce
    )
    waves_path = work_dir / "waves" / f"run{runner.WAVES_SUFFIX[options.sim]}"
    if options.waves:
        waves_path.parent.mkdir(parents=True, exist_ok=True)
    stimulus = runner.Stimulus(
        images=images,
        expected=expected,
        stall=options.stall,
        seed=options.seed,
        waves=waves_path if options.waves else None,
        stop_at_first_mismatch=options.stop_at_first_mismatch,
    )
    start = time.perf_counter()
    result = runner.run(built, ports, stimulus, work_dir / "run", progress)
    seconds = time.perf_counter() - start
    classes = np.array([-2 if c is None else c for c in result["classes"]], dtype=np.int64)
    classes = np.concatenate([classes, np.full(len(images) - len(classes), -2, np.int64)])
    if labels is None:
        labels = np.full(len(images), -1, np.int64)
    labelled = labels >= 0
    report = CosimReport(
        model_sha256=model.sha256,
        design=str(design),
        simulator=options.sim,
        stall=options.stall,
        seed=options.seed,
        images=len(images),
        outputs=result["outputs"],
        mismatches=result["mismatches"],
        missing_outputs=result["missing_outputs"],
        extra_outputs=result["extra_outputs"],
        stalled=result["stalled"],
        first_mismatch=result["first_mismatch"],
        labelled=int(labelled.sum()),
        correct=int((classes[labelled] == labels[labelled]).sum()),
        reference_correct=int((ref.predicted[labelled] == labels[labelled]).sum()),
        latency_cycles=result["latency_cycles"],
        initiation_interval_cycles=result["initiation_interval_cycles"],
        cycles_per_image=result["cycles_per_image"],
        predicted_latency_cycles=ports.latency_cycles,
        predicted_initiation_interval_cycles=ports.initiation_interval_cycles,
        simulated_cycles=result["cycles"],
        gap_cycles=result.get("gap_cycles", 0),
        backpressure_cycles=result.get("backpressure_cycles", 0),
        build_seconds=built.seconds,
        run_seconds=seconds,
        waveform=str(waves_path) if options.waves else None,
        summary=result["summary"],
        names=list(names) if names is not None else [],
    )
    if report.first_mismatch is not None and names:
        image = report.first_mismatch["image"]
        report.first_mismatch["input"] = names[image] if image < len(names) else None
    if not report.passed and options.waves_on_mismatch and not options.waves:
        if announce is not None:
            announce("replaying up to the first failing image to write its waveform")
        report.waveform = str(
            _replay_with_waves(
                model, verilog, ports, images, expected, result, work_dir, options, announce
            )
        )
    return report


def _replay_with_waves(
    model: IntegerModel,
    verilog: Path,
    ports: Ports,
    images: np.ndarray,
    expected: list[int],
    result: dict[str, Any],
    work_dir: Path,
    options: CosimOptions,
    announce: Callable[[str], None] | None,
) -> Path:
    """Rerun the images up to the first failing one (same seed, so the same handshakes) with a
    waveform from that image's first input beat to its output, or to the end of the run when
    the output never came."""
    if result["first_mismatch"] is not None:
        image = result["first_mismatch"]["image"]
        end = result["first_mismatch"]["cycle"] + WAVE_MARGIN_CYCLES
    else:
        image = min(result["outputs"], len(images) - 1)
        end = result["cycles"]
    in_cycles = result["in_cycles"]
    begin = in_cycles[image] - WAVE_MARGIN_CYCLES if image < len(in_cycles) else 0
    count = len(images) if result["first_mismatch"] is None else image + 1
    built = runner.build(
        verilog, ports, options.sim, work_dir / "builds", waves=True, announce=announce
    )
    path = work_dir / "waves" / f"image{image}{runner.WAVES_SUFFIX[options.sim]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    stimulus = runner.Stimulus(
        images=images[:count],
        expected=expected[:count],
        stall=options.stall,
        seed=options.seed,
        waves=path,
        waves_window=(max(begin, 1), end),
        stop_at_first_mismatch=True,
    )
    runner.run(built, ports, stimulus, work_dir / "replay")
    return path


def first_problem(report: CosimReport) -> str:
    """One line naming what went wrong, for the CLI and the self-check."""
    if report.first_mismatch is not None:
        return describe(report.first_mismatch)
    return report.summary
