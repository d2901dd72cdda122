"""``bchw cosim``: stream images through the generated Verilog and compare with the reference.

One call: read the design's manifest, check it belongs to the model, build the harness (or reuse
the cached build), stream the images, compare every output bit for bit (in the testbench), and on
the first mismatch replay the images up to it with a waveform of the failing image.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bchw.core import reference
from bchw.core.intmodel import IntegerModel
from bchw.errors import BchwError
from rtl_gen.manifest import VERILOG_NAME, Manifest
from sim import runner
from sim.checker import describe
from sim.harness import check_port_widths, pack_outputs
from sim.options import CosimOptions

WAVE_MARGIN_CYCLES = 16


@dataclass
class CosimReport:
    """What ``bchw cosim --json`` prints (``to_json``)."""

    model_sha256: str
    design: str
    simulator: str
    gap: float
    backpressure: float
    burst: int
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
    input_refused_cycles: int  # cycles the design refused an offered input beat
    build_seconds: float
    run_seconds: float
    waveform: str | None = None
    waveform_note: str | None = None
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
            "stall_in": self.gap,
            "stall_out": self.backpressure,
            "stall_burst": self.burst,
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
            "input_refused_cycles": self.input_refused_cycles,
            "images_per_second": round(self.images_per_second, 2),
            "build_seconds": round(self.build_seconds, 2),
            "run_seconds": round(self.run_seconds, 2),
            "waveform": self.waveform,
            "waveform_note": self.waveform_note,
            "summary": self.summary,
        }


def check_design_matches(manifest: Manifest, model: IntegerModel, design: Path) -> None:
    if manifest.model_sha256 != model.sha256:
        raise BchwError(
            f"design {design} was generated from model {manifest.model_sha256[:12]}, not from this "
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
    manifest = Manifest.load(design)
    check_design_matches(manifest, model, design)
    verilog = design / VERILOG_NAME
    if not verilog.is_file():
        raise BchwError(f"design folder {design} has no {VERILOG_NAME}")
    check_port_widths(verilog, manifest)
    if len(images) == 0:
        raise BchwError("no images to simulate")
    ref = reference.run(model, images)
    expected = pack_outputs(ref.scores, ref.predicted, manifest)
    work_dir = Path(work_dir)
    built = runner.build(
        verilog, manifest, options.sim, work_dir / "builds", waves=options.waves, announce=announce
    )
    waves_path = work_dir / "waves" / f"run{runner.WAVES_SUFFIX[options.sim]}"
    if options.waves:
        waves_path.parent.mkdir(parents=True, exist_ok=True)
    shares = share_images(len(images), 1 if options.waves else options.jobs)
    stimuli = [
        options.stimulus(
            images[a:b],
            expected[a:b],
            waves=waves_path if options.waves else None,
            stop_at_first_mismatch=options.stop_at_first_mismatch,
        )
        for a, b in shares
    ]
    for k in range(1, len(stimuli)):  # each share its own gaps and back-pressure
        stimuli[k] = dataclasses.replace(stimuli[k], seed=options.seed + k)
    start = time.perf_counter()
    if len(shares) == 1:
        results = [runner.run(built, manifest, stimuli[0], work_dir / "run", progress)]
    else:
        results = _run_shares(built, manifest, stimuli, work_dir, progress)
    seconds = time.perf_counter() - start
    result = merge_results(results, shares)
    classes = np.array([-2 if c is None else c for c in result["classes"]], dtype=np.int64)
    classes = np.concatenate([classes, np.full(len(images) - len(classes), -2, np.int64)])
    if labels is None:
        labels = np.full(len(images), -1, np.int64)
    labelled = labels >= 0
    report = CosimReport(
        model_sha256=model.sha256,
        design=str(design),
        simulator=options.sim,
        gap=options.gap,
        backpressure=options.backpressure,
        burst=options.burst,
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
        predicted_latency_cycles=manifest.latency_cycles,
        predicted_initiation_interval_cycles=manifest.initiation_interval_cycles,
        simulated_cycles=result["cycles"],
        gap_cycles=result.get("gap_cycles", 0),
        backpressure_cycles=result.get("backpressure_cycles", 0),
        input_refused_cycles=result.get("input_refused_cycles", 0),
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
            announce("replaying the run up to the first failure to write its waveform")
        # The share that failed first, replayed alone: the same handshakes as in its run.
        k = next(k for k, r in enumerate(results) if not r["passed"])
        a, b = shares[k]
        report.waveform, report.waveform_note = _replay_with_waves(
            verilog, manifest, images[a:b], expected[a:b], results[k], work_dir, options,
            announce, offset=a,
        )  # fmt: skip
    return report


def share_images(count: int, jobs: int) -> list[tuple[int, int]]:
    """Contiguous ``[a, b)`` shares of ``count`` images for ``jobs`` simulator processes, at
    least 8 images each (a pipeline fills and empties once per share)."""
    shares = max(1, min(jobs, count // 8))
    bounds = [count * k // shares for k in range(shares + 1)]
    return list(zip(bounds, bounds[1:], strict=False))


def _run_shares(
    built: runner.Build,
    manifest: Manifest,
    stimuli: list[runner.Stimulus],
    work_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None,
) -> list[dict[str, Any]]:
    """Run each share in its own simulator process, side by side; progress sums them."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()
    states: list[dict[str, Any] | None] = [None] * len(stimuli)

    def tell(k: int, state: dict[str, Any]) -> None:
        with lock:
            states[k] = state
            known = [s for s in states if s is not None]
            if progress is not None:
                progress(
                    {
                        "outputs": sum(s["outputs"] for s in known),
                        "images": sum(len(st.images) for st in stimuli),
                        "mismatches": sum(s["mismatches"] for s in known),
                        "cycle": sum(s["cycle"] for s in known),
                    }
                )

    with ThreadPoolExecutor(len(stimuli)) as pool:
        futures = [
            pool.submit(
                runner.run,
                built,
                manifest,
                stimulus,
                work_dir / "run" / f"share{k}",
                lambda state, k=k: tell(k, state),
            )  # fmt: skip
            for k, stimulus in enumerate(stimuli)
        ]
        return [future.result() for future in futures]


def merge_results(results: list[dict[str, Any]], shares: list[tuple[int, int]]) -> dict[str, Any]:
    """One result document for shares run apart: counts summed, image numbers made global,
    each share's classes padded to its images (a share that ended early has fewer); the
    latency is the first measured one (an empty pipeline), the interval the median over the
    shares' medians, simulated cycles summed (cycle numbers inside a share are its own)."""
    if len(results) == 1:
        return results[0]
    offsets = [a for a, _ in shares]
    first = None
    for result, offset in zip(results, offsets, strict=True):
        if result["first_mismatch"] is not None and first is None:
            first = dict(result["first_mismatch"], image=result["first_mismatch"]["image"] + offset)
    problems = [
        f"share of images {offset}..: {r['summary']}"
        for r, offset in zip(results, offsets, strict=True)
        if not r["passed"]
    ]
    total = {key: sum(r[key] for r in results) for key in (
        "images", "outputs", "mismatches", "missing_outputs", "extra_outputs", "cycles",
        "beats_taken", "gap_cycles", "backpressure_cycles", "input_refused_cycles",
    ) if all(key in r for r in results)}  # fmt: skip
    intervals = sorted(
        r["initiation_interval_cycles"] for r in results if r["initiation_interval_cycles"]
    )
    spans = [r["cycles_per_image"] * r["outputs"] for r in results if r["cycles_per_image"]]
    return {
        **total,
        "passed": not problems,
        "summary": "; ".join(problems) if problems else "all outputs match",
        "mismatched_images": [
            image + offset
            for r, offset in zip(results, offsets, strict=True)
            for image in r["mismatched_images"]
        ],
        "first_mismatch": first,
        "stalled": any(r["stalled"] for r in results),
        "classes": [
            c
            for r, (a, b) in zip(results, shares, strict=True)
            for c in [*r["classes"], *[None] * (b - a - len(r["classes"]))]
        ],
        "latency_cycles": next(
            (r["latency_cycles"] for r in results if r["latency_cycles"] is not None), None
        ),
        "max_latency_cycles": max(
            (r["max_latency_cycles"] for r in results if r["max_latency_cycles"] is not None),
            default=None,
        ),
        "initiation_interval_cycles": intervals[len(intervals) // 2] if intervals else None,
        "min_interval_cycles": min(
            (r["min_interval_cycles"] for r in results if r.get("min_interval_cycles")),
            default=None,
        ),
        "cycles_per_image": sum(spans) / total["outputs"] if total.get("outputs") else None,
    }


def _replay_with_waves(
    verilog: Path,
    manifest: Manifest,
    images: np.ndarray,
    expected: list[int],
    result: dict[str, Any],
    work_dir: Path,
    options: CosimOptions,
    announce: Callable[[str], None] | None,
    offset: int = 0,
) -> tuple[str, str | None]:
    """Rerun the same stimulus (same seed, so the same handshakes: a failure that depends on
    later images filling buffers comes back too) with tracing, dumping from 16 cycles before
    the failing image's first input beat and ending the run 16 cycles after its wrong output
    (or at the end, when the output never came). Returns the waveform's path and, when the
    replay did not fail the same way, a note saying so."""
    first = result["first_mismatch"]
    if first is not None:
        image, end = first["image"], first["cycle"] + WAVE_MARGIN_CYCLES
    else:
        image, end = min(result["outputs"], len(images) - 1), result["cycles"]
    in_cycles = result["in_cycles"]
    begin = in_cycles[image] - WAVE_MARGIN_CYCLES if image < len(in_cycles) else 1
    built = runner.build(
        verilog, manifest, options.sim, work_dir / "builds", waves=True, announce=announce
    )
    path = work_dir / "waves" / f"image{image + offset}{runner.WAVES_SUFFIX[options.sim]}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BchwError(f"cannot create {path.parent}: {exc.strerror}") from None
    stimulus = options.stimulus(images, expected, waves=path, waves_window=(max(begin, 1), end))
    replay = runner.run(built, manifest, stimulus, work_dir / "replay")
    same = (
        replay["first_mismatch"] is not None
        and replay["first_mismatch"]["image"] == image
        and replay["first_mismatch"]["cycle"] == first["cycle"]
        if first is not None
        else replay["outputs"] <= result["outputs"]
    )
    note = None if same else "the replay did not fail the same way; the waveform may not show it"
    return str(path), note


def first_problem(report: CosimReport) -> str:
    """One line naming what went wrong, for the CLI and the self-check."""
    if report.first_mismatch is not None:
        return describe(report.first_mismatch)
    return report.summary
