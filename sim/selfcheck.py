"""``bchw cosim --self-check``: inject faults into the generated design and count how many the
cosimulation reports (the kill rate).

Each fault of :mod:`rtl_gen.faults` gets its own design folder, generated with exactly that one
bug and cosimulated on the same stimulus: the data-set images plus corner, directed and random
vectors (:mod:`sim.stimuli`), which make sure ties and saturation are exercised. The clean design
must pass first; otherwise the self-check proves nothing and says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bchw.core import reference
from bchw.core.intmodel import IntegerModel
from bchw.errors import BchwError
from rtl_gen.conv_plan import ConvDesignPlan
from rtl_gen.faults import FAULT_KINDS, WINDOW_FAULT_KINDS, Fault, flip_weight
from rtl_gen.plan import DesignPlan
from sim.cosim import CosimOptions, CosimReport, cosimulate, first_problem

WEIGHT_CANDIDATES = 64


@dataclass(frozen=True)
class FaultResult:
    fault: Fault
    detected: bool
    how: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.fault.kind,
            "fault": self.fault.describe(),
            "detected": self.detected,
            "how": self.how,
            "seconds": round(self.seconds, 2),
        }


def choose_faults(
    model: IntegerModel, images: np.ndarray, beats0: int, seed: int = 0
) -> list[Fault]:
    """One fault of each kind, placed where the stimulus can see it.

    The flipped weight is the first of a seeded random sequence that changes some reference
    output on ``images`` (a flip that changes none is invisible to any bit-exact check); the
    missing saturation goes to the layer the stimulus saturates most; the rounding shift to the
    first layer; the dropped beat is the first beat of the second image after layer 0
    (``beats0`` beats per image leave it). A CNN's first convolution gets its windows shifted,
    its first padded convolution the wrong padding.
    """
    rng = np.random.default_rng(seed)
    clean = reference.run(model, images)
    weighted = [k for k, layer in enumerate(model.layers) if layer.kind != "maxpool"]
    weight_fault = None
    for _ in range(WEIGHT_CANDIDATES):
        layer = weighted[int(rng.integers(len(weighted)))]
        shape = model.layers[layer].weights.shape
        neuron, input_ = int(rng.integers(shape[0])), int(rng.integers(shape[1]))
        flipped = reference.run(flip_weight(model, layer, neuron, input_), images)
        if (flipped.scores != clean.scores).any():
            weight_fault = Fault("weight-bit", layer=layer, neuron=neuron, input=input_)
            break
    if weight_fault is None:
        raise BchwError("no flipped weight changes an output on this stimulus; add images")
    saturated = [s.high for s in clean.saturation]
    faults = {
        "weight-bit": weight_fault,
        "rounding-shift": Fault("rounding-shift", layer=weighted[0]),
        "no-saturation": Fault("no-saturation", layer=int(np.argmax(saturated))),
        "argmax-ties": Fault("argmax-ties"),
        "dropped-beat": Fault("dropped-beat", beat=beats0 if len(images) > 1 else 0),
    }
    chosen = [faults[kind] for kind in FAULT_KINDS]
    convolutions = [k for k, layer in enumerate(model.layers) if layer.kind == "conv"]
    padded = [k for k in convolutions if model.layers[k].padding > 0]
    places = {"window-shift": convolutions[:1], "window-padding": padded[:1]}
    for kind in WINDOW_FAULT_KINDS:  # a padded convolution's padding only
        chosen += [Fault(kind, layer=k) for k in places[kind]]
    return chosen


def self_check(
    plan: DesignPlan | ConvDesignPlan,
    images: np.ndarray,
    names: list[str],
    work_dir: Path,
    options: CosimOptions,
    clean_report: CosimReport,
    announce: Callable[[str], None] = print,
) -> list[FaultResult]:
    """Cosimulate one faulty design per fault kind, each built from the clean design's
    ``plan`` with one bug; ``clean_report`` is the clean design's run on the same ``images``,
    which must have passed."""
    import time

    from rtl_gen.generate import generate

    if not clean_report.passed:
        raise BchwError(
            "the clean design fails its own cosimulation, so the self-check would prove nothing: "
            + first_problem(clean_report)
        )
    model = plan.model
    first = plan.layers[0]
    beats0 = first.neuron_folds * first.layer.positions  # beats per image out of the first engine
    faulty_options = dataclasses.replace(
        options, waves=False, waves_on_mismatch=False, stop_at_first_mismatch=True
    )
    results = []
    for fault in choose_faults(model, images, beats0):
        announce(f"fault     {fault.describe()}: generating and simulating")
        start = time.perf_counter()
        folder = Path(work_dir) / "faults" / fault.kind
        generate(plan, folder / "design", fault)
        report = cosimulate(
            model, folder / "design", images, None, folder, faulty_options, names=names
        )
        detected = not report.passed
        how = first_problem(report) if detected else "not detected: every output matched"
        results.append(FaultResult(fault, detected, how, time.perf_counter() - start))
        announce(f"          {'DETECTED' if detected else 'MISSED  '} {how}")
    return results
