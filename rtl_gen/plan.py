"""The design plan: what the generator builds, decided in plain Python (no Amaranth).

A plan fixes, for an integer model, a folding and the generator's options, every number the
hardware has: per layer its neuron and synapse folds, the accumulator's range, the requantizer's
width and time sharing, the pipeline's depth; the links between layers; and the design's
latency and initiation interval in cycles. The generator builds its blocks from the plan, the
manifest reports it, the analytical model counts from it and the command line prints it, so
that nobody builds a circuit to count cycles. The cycle counts are checked against simulation,
to the cycle, by the tests.

Folding choices live here too: :func:`default_folding`, :func:`unrolled_folding`, foldings
from lists or files, and :func:`check_design`, which refuses what the generator cannot build.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bchw import jsondoc
from bchw.core.intmodel import IntegerLayer, IntegerModel, require_mlp
from bchw.errors import BchwError
from rtl_gen import (
    ADDER_TREES,
    DEFAULT_ADDER_TREE,
    DEFAULT_PIPELINE_EVERY,
    DEFAULT_SYNAPSES_PER_CYCLE,
    MAC_WEIGHT_BITS,
)
from rtl_gen.ranges import (
    Range,
    flipped_range,
    ones,
    paired_lane_range,
    product_range,
    range_width,
    relative_root_range,
    requant_width,
    signed_max,
    sum_range,
    tree_latency,
)

# What one PE costs beyond its synapses, in synapse-sized adders: an accumulator and a
# requantizer (K shifted adds, rounding, clamp), all wider than a synapse adder.
PE_COST = 8
# Beyond this many synapses per cycle a design takes too long to generate and cannot fit a chip.
MAX_SYNAPSES_PER_CYCLE = 1 << 18
# A first-in first-out link's first beat is valid this many cycles after it is written.
FIFO_LATENCY = 2
# Registers of a requantizer, each stage a carry chain or two deep, so that it is not what
# limits the clock (the critical path of a placed design was once its constants' block RAM
# read, a barrel shifter, K adds and the clamp in one cycle). Constants fixed in the circuit:
# t, then the clamped output. Per-beat constants: the ROM word and the selected accumulator,
# the shifted terms, t, then the output (after the ``steps`` cycles of a time-shared unit).
REQUANT_STATIC_STAGES = 2
REQUANT_ROM_STAGES = 3
# A requantizer's constants ROM this shallow is built in logic, not block RAM: each of its bits
# is one or two LUT4s of the address (some 35 to 70 LUTs a word of constants), where block RAM
# would take a whole block per 16 or 36 bits of width (3 of an iCE40UP5K's 30 for digits).
SHALLOW_ROM_DEPTH = 16


def argmax_every(pipeline_every: int) -> int:
    """Comparator levels of the argmax between registers: one whenever the design is pipelined
    (``pipeline_every`` > 0). A level is a comparison (a carry chain) and a multiplexer that the
    next level's comparison waits on, deeper than an adder level; two of them after the
    collector's bank multiplexer were a placed design's critical path."""
    return 1 if pipeline_every > 0 else 0


def scan_latency(classes: int) -> int:
    """Cycles from a scanning argmax's beat to its result (:class:`rtl_gen.argmax.ScanArgmax`):
    a cycle to read each score, and one to compare the last."""
    return classes + 1


def scan_argmax(classes: int, interval: int) -> bool:
    """Whether the argmax scans the scores, one comparison a cycle
    (:class:`rtl_gen.argmax.ScanArgmax`), instead of comparing them in a tree: where the rest of
    the design takes at least twice the scan's cycles per image, so it never waits on the scan.
    A folded design's images are thousands of cycles apart; the tree's comparators and its
    registered copies of the scores were 485 logic cells of an iCE40UP5K's 5,280 (digits
    at PE/SIMD 2/16, 1/2, 10/1)."""
    return classes >= 2 and interval >= 2 * (scan_latency(classes) + 1)


def argmax_latency(classes: int, interval: int, pipeline_every: int) -> int:
    """Cycles from the argmax's input beat to its result: a scan's, else one a register level
    of the tree."""
    if scan_argmax(classes, interval):
        return scan_latency(classes)
    return tree_latency(classes, argmax_every(pipeline_every))


DOT_PRODUCT_KINDS = ("binary", "mac")


@dataclass(frozen=True)
class LayerFolding:
    """Neurons (``pe``) and inputs (``simd``) computed per cycle in one layer."""

    pe: int
    simd: int


@dataclass(frozen=True)
class DotProduct:
    """The dot-product unit of every layer engine, chosen explicitly.

    ``binary``: adder/subtractor trees over 1-bit weights (constants when a layer is unrolled,
    weight bits from memory when folded, applied as ``adder_tree`` says). ``mac``: the
    multiply-accumulate baseline's multipliers over signed ``weight_bits``-bit weights, for a
    model made by :func:`rtl_gen.baseline.mac_model`.
    """

    kind: str = "binary"
    adder_tree: str = DEFAULT_ADDER_TREE
    weight_bits: int = 1

    def __post_init__(self) -> None:
        if self.kind not in DOT_PRODUCT_KINDS:
            raise BchwError(f"unknown dot-product unit {self.kind!r}: binary or mac")
        if self.adder_tree not in ADDER_TREES:
            known = ", ".join(ADDER_TREES)
            raise BchwError(f"--adder-tree must be one of {known}, got {self.adder_tree}")
        if self.kind == "binary" and self.weight_bits != 1:
            raise BchwError("a binary dot-product unit has 1-bit weights")
        if self.kind == "mac" and self.weight_bits not in MAC_WEIGHT_BITS:
            raise BchwError(
                f"MAC weights must be one of {MAC_WEIGHT_BITS} bits, got {self.weight_bits}"
            )

    @classmethod
    def binary(cls, adder_tree: str = DEFAULT_ADDER_TREE) -> DotProduct:
        return cls("binary", adder_tree, 1)

    @classmethod
    def mac(cls, weight_bits: int) -> DotProduct:
        # A multiply tree has no sign-bit leaves: the manifest records "xor", as manifests
        # written before the field existed do.
        return cls("mac", "xor", weight_bits)

    def check(self, model: IntegerModel) -> None:
        """Refuse a model whose weights this unit cannot compute with."""
        for index, layer in enumerate(model.layers):
            if layer.weight_bits != self.weight_bits:
                raise BchwError(
                    f"layer {index} has {layer.weight_bits}-bit weights; the {self.kind} "
                    f"unit takes {self.weight_bits}-bit weights"
                )


BINARY = DotProduct()


# -- one layer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerPlan:
    """One layer engine: ``pe`` neurons over ``simd`` inputs per cycle.

    Unrolled (one neuron fold and one synapse fold) the weights are constants of one tree per
    neuron; folded, they come from a memory of ``neuron_folds * synapse_folds`` words. Ranges
    are exact: ``lane_range`` bounds one lane's output of the tree per beat (its dot product,
    plus the constant excess that XOR leaves and relative-sign trees add), ``acc_range`` what a
    folded PE's accumulator holds over the synapse folds.
    """

    layer: IntegerLayer
    pe: int
    simd: int
    pipeline_every: int
    requant_registered: bool
    unit: DotProduct
    neuron_folds: int
    synapse_folds: int
    tree_latency: int
    lane_range: Range
    acc_range: Range
    requant_width: int
    requant_share: int  # lanes per requantizer unit at most (1: not time-shared)
    requant_units: int
    requant_steps: int
    requant_latency: int

    @property
    def unrolled(self) -> bool:
        return self.neuron_folds == 1 and self.synapse_folds == 1

    @property
    def register_tree_inputs(self) -> bool:
        """A folded, pipelined layer registers its tree's inputs (XOR trees: the leaves): the
        weights come straight from a block RAM read (:func:`rtl_gen.adder_tree.input_stage`)."""
        return not self.unrolled and self.pipeline_every > 0

    @property
    def output_skid(self) -> bool:
        """A pipelined layer gives its results through a skid buffer: its ``o.ready`` reaches
        no further than one register, so the next block's back-pressure does not run through
        the requantizer, accumulators and tree into the weight memory's read enable (the
        critical path before it). It adds no latency (:func:`rtl_gen.pipeline.skid_buffer`)."""
        return self.pipeline_every > 0

    @property
    def tree_skid(self) -> bool:
        """A pipelined folded layer also puts a skid buffer between its tree and accumulators:
        the tree's stage enables and the weight memory's read enable then wait on one register
        instead of the requantizer and the accumulators' hand-over. No latency either."""
        return self.output_skid and not self.unrolled

    @property
    def static_constants(self) -> bool:
        """One neuron fold: every lane always holds the same neuron, its constants are wiring."""
        return self.neuron_folds == 1

    @property
    def constants_in_logic(self) -> bool:
        """Per-beat constants from a ROM shallow enough for logic (:data:`SHALLOW_ROM_DEPTH`)."""
        return not self.static_constants and self.requant_rom_depth <= SHALLOW_ROM_DEPTH

    @property
    def cycles_per_vector(self) -> int:
        """Initiation interval: cycles between vectors when nothing stalls."""
        return self.neuron_folds * self.synapse_folds

    @property
    def pipeline_depth(self) -> int:
        """Cycles from issuing a vector's last beat of a fold to that fold's output beat."""
        if self.unrolled:
            return self.tree_latency + self.requant_latency
        # The memory read, the issue register, and the read stage when a buffer is re-read.
        issue = 3 if self.neuron_folds > 1 else 2
        return issue + self.tree_latency + self.requant_latency

    @property
    def requant_rom_depth(self) -> int:
        """Words of the requantizer's constants ROM (per-beat constants only): one per step of
        each neuron fold, at least 2 (a one-word memory has no address)."""
        return max(2, self.neuron_folds * self.requant_steps)

    @property
    def weight_word_bits(self) -> int:
        """Bits of one weight-memory word (one synapse fold of one neuron fold)."""
        return self.pe * self.simd * self.unit.weight_bits

    @property
    def weight_memory_bits(self) -> int:
        return 0 if self.unrolled else self.cycles_per_vector * self.weight_word_bits

    @property
    def acc_width(self) -> int:
        return range_width(*self.acc_range)[0]

    @property
    def input_width(self) -> int:
        return self.layer.input_bits

    def output_times(self, input_times: list[int]) -> list[int]:
        """Cycle of each output beat of one vector, given when its input beats become valid
        (no back-pressure, engine idle before)."""
        if self.unrolled:
            return [input_times[0] + self.pipeline_depth]
        issue: list[int] = []
        for beat, arrival in enumerate(input_times):
            issue.append(arrival if beat == 0 else max(arrival, issue[-1] + 1))
        last_fold0 = issue[-1]
        return [
            last_fold0 + fold * self.synapse_folds + self.pipeline_depth
            for fold in range(self.neuron_folds)
        ]


def unrolled_lane_ranges(layer: IntegerLayer, unit: DotProduct) -> list[Range]:
    """Each neuron's exact output range of an unrolled layer's tree (constant weights)."""
    x_max = layer.input_max
    if unit.kind == "binary":
        return [sum_range(row, 0, x_max) for row in layer.weights]
    ranges = []
    for row in layer.weights:
        products = [product_range(w, x_max) for w in row]
        ranges.append((sum(lo for lo, _ in products), sum(hi for _, hi in products)))
    return ranges


def folded_lane_range(layer: IntegerLayer, simd: int, unit: DotProduct) -> Range:
    """One lane's output range of a folded layer's tree, per beat of ``simd`` inputs."""
    x_max = layer.input_max
    if unit.kind == "mac":
        bound = signed_max(unit.weight_bits) * x_max
        return -simd * bound, simd * bound
    if unit.adder_tree == "relative":
        return flipped_range(*relative_root_range(simd, (0, x_max)))
    if unit.adder_tree == "pair":
        return paired_lane_range(simd, ones(x_max))
    return 0, simd * ones(x_max)  # XOR leaves: x or its ones' complement


def plan_layer(
    layer: IntegerLayer,
    pe: int,
    simd: int,
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    requant_registered: bool = True,
    unit: DotProduct = BINARY,
) -> LayerPlan:
    """The plan of one layer engine (``ValueError`` for a folding it cannot have)."""
    n_in, n_out = layer.in_features, layer.out_features
    if not 1 <= pe <= n_out:
        raise ValueError(f"PE must lie in 1..{n_out}, got {pe}")
    if not 1 <= simd <= n_in:
        raise ValueError(f"SIMD must lie in 1..{n_in}, got {simd}")
    nf, sf = math.ceil(n_out / pe), math.ceil(n_in / simd)
    unrolled = nf == 1 and sf == 1
    multiply = 1 if unit.kind == "mac" else 0  # the product registers
    if unrolled:
        latency = multiply + tree_latency(n_in, pipeline_every)
        lanes = unrolled_lane_ranges(layer, unit)
        lane = (min(lo for lo, _ in lanes), max(hi for _, hi in lanes))
        acc = lane
    else:
        # The tree's inputs registered (LayerPlan.register_tree_inputs) when pipelined.
        latency = multiply + int(pipeline_every > 0) + tree_latency(simd, pipeline_every)
        lane = folded_lane_range(layer, simd, unit)
        if unit.kind == "mac":
            bound = layer.acc_bound  # the MAC layer's: in_features * input_max * weight_max
            acc = (-bound, bound)
        else:
            acc = (sf * lane[0], sf * lane[1])
    # A folded PE hands over one result every sf cycles: with per-beat constants the PEs share
    # ceil(pe / sf) requantizers, time-multiplexed, at no cost in throughput.
    static = nf == 1
    share = min(sf, pe) if not static and requant_registered else 1
    units, steps, requant_latency = requant_schedule(pe, share, requant_registered, static)
    return LayerPlan(
        layer=layer,
        pe=pe,
        simd=simd,
        pipeline_every=pipeline_every,
        requant_registered=requant_registered,
        unit=unit,
        neuron_folds=nf,
        synapse_folds=sf,
        tree_latency=latency,
        lane_range=lane,
        acc_range=acc,
        requant_width=requant_width(layer),
        requant_share=share,
        requant_units=units,
        requant_steps=steps,
        requant_latency=requant_latency,
    )


def requant_schedule(
    n_lanes: int, share: int, registered: bool, static: bool
) -> tuple[int, int, int]:
    """A requantizer of ``n_lanes`` lanes time-shared ``share`` ways: ``(units, steps,
    latency)``, ``units`` copies of the arithmetic computing the lanes in ``steps`` cycles.

    The latency: 0 when combinational; with constants fixed in the circuit (``static``)
    :data:`REQUANT_STATIC_STAGES`; with per-beat constants ``steps`` plus
    :data:`REQUANT_ROM_STAGES` (the registers between the constants ROM and the output)."""
    units = -(-n_lanes // max(1, share))
    steps = -(-n_lanes // units)
    if not registered:
        if steps > 1:
            raise ValueError("a time-shared requantizer is registered")
        return units, steps, 0
    return units, steps, REQUANT_STATIC_STAGES if static else steps + REQUANT_ROM_STAGES


def pack_weight_words(plan: LayerPlan, values: np.ndarray, bits: int) -> list[int]:
    """Word ``f * sf + s`` holds, in field ``p * simd + l`` of ``bits`` bits, ``values`` of
    neuron ``f * pe + p`` on input ``s * simd + l`` (0 for padding)."""
    pe, simd, nf, sf = plan.pe, plan.simd, plan.neuron_folds, plan.synapse_folds
    layer = plan.layer
    padded = np.zeros((nf * pe, sf * simd), dtype=np.int64)
    padded[: layer.out_features, : layer.in_features] = values
    fields = padded & ((1 << bits) - 1)  # two's complement, ``bits`` bits
    words = []
    for f in range(nf):
        for s in range(sf):
            block = fields[f * pe : (f + 1) * pe, s * simd : (s + 1) * simd].reshape(-1)
            words.append(sum(int(v) << (bits * n) for n, v in enumerate(block) if v))
    return words


# -- links and the design -----------------------------------------------------------------------


@dataclass(frozen=True)
class FifoLink:
    """A first-in first-out queue of ``depth`` beats of ``lanes`` values (the beats match)."""

    lanes: int
    depth: int
    beats: int  # per vector

    kind = "fifo"

    @property
    def cycles_per_vector(self) -> int:
        return self.beats

    def output_times(self, input_times: list[int]) -> list[int]:
        outs: list[int] = []
        for arrival in input_times:
            ready = arrival + FIFO_LATENCY
            outs.append(ready if not outs else max(ready, outs[-1] + 1))
        return outs


@dataclass(frozen=True)
class VectorBufferLink:
    """Two banks of ``n`` registers re-beating a vector from ``in_lanes`` to ``out_lanes``."""

    n: int
    in_lanes: int
    out_lanes: int

    kind = "vector_buffer"

    @property
    def in_beats(self) -> int:
        return math.ceil(self.n / self.in_lanes)

    @property
    def out_beats(self) -> int:
        return math.ceil(self.n / self.out_lanes)

    @property
    def cycles_per_vector(self) -> int:
        return max(self.in_beats, self.out_beats)

    def output_times(self, input_times: list[int]) -> list[int]:
        first = input_times[-1] + 1
        return [first + k for k in range(self.out_beats)]


@dataclass(frozen=True)
class DesignPlan:
    """A whole network: layer engines, the links between them, the collector that gathers the
    scores into one beat (when the last layer gives them over several) and the argmax."""

    model: IntegerModel
    folding: tuple[LayerFolding, ...]
    pipeline_every: int
    unit: DotProduct
    layers: tuple[LayerPlan, ...]
    links: tuple[FifoLink | VectorBufferLink, ...]
    collector: VectorBufferLink | None
    argmax_latency: int
    argmax_scan: bool  # a scanning argmax (scan_argmax), else a tree of comparators

    @property
    def adder_tree(self) -> str:
        return self.unit.adder_tree

    @property
    def input_beats(self) -> int:
        """Beats per image on the input stream."""
        return self.layers[0].synapse_folds

    @property
    def input_lanes(self) -> int:
        return self.folding[0].simd

    @property
    def initiation_interval(self) -> int:
        """Cycles between images in a full pipeline: the slowest stage's cycles per image (the
        argmax's never is: a scanning one is used only where it is not)."""
        return _slowest_stage(self.layers, self.links, self.collector)

    @property
    def latency(self) -> int:
        """Cycles from taking an image's first beat to its result being valid, when the image's
        beats arrive back to back, the pipeline is empty and the output is ready."""
        times = list(range(self.input_beats))
        for index, layer in enumerate(self.layers):
            times = layer.output_times(times)
            if index < len(self.links):
                times = self.links[index].output_times(times)
        if self.collector is not None:
            times = self.collector.output_times(times)
        return times[-1] + self.argmax_latency

    @property
    def synapses_per_cycle(self) -> int:
        return sum(f.pe * f.simd for f in self.folding)


def link_between(a: LayerPlan, b: LayerPlan) -> FifoLink | VectorBufferLink:
    """The link from dense layer engine ``a`` to ``b``: a FIFO of one vector plus two beats
    where the beats match (``pe_a == simd_b``), else a vector buffer that re-beats."""
    if a.pe == b.simd:
        return FifoLink(a.pe, a.neuron_folds + 2, a.neuron_folds)
    return VectorBufferLink(a.layer.out_features, a.pe, b.simd)


def plan_design(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    unit: DotProduct = BINARY,
    requant_registered: bool = True,
) -> DesignPlan:
    """The plan of the whole network (the folding checked by :func:`check_design`).

    Between two layers sits a FIFO of one vector plus two beats when ``pe_l == simd_(l+1)``
    (the beats match; that deep, it sustains a beat per cycle), else a double-buffered vector
    buffer that re-beats the vector; after the last layer a vector buffer gathers the scores
    into one beat unless the layer gives them at once.
    """
    check_design(model, folding, pipeline_every, unit)
    layers = tuple(
        plan_layer(layer, f.pe, f.simd, pipeline_every, requant_registered, unit)
        for layer, f in zip(model.layers, folding, strict=True)
    )
    links = [link_between(a, b) for a, b in zip(layers, layers[1:], strict=False)]
    classes = model.num_classes
    last = layers[-1]
    collector = None if last.pe == classes else VectorBufferLink(classes, last.pe, classes)
    interval = _slowest_stage(layers, links, collector)
    return DesignPlan(
        model=model,
        folding=tuple(folding),
        pipeline_every=pipeline_every,
        unit=unit,
        layers=layers,
        links=tuple(links),
        collector=collector,
        argmax_latency=argmax_latency(classes, interval, pipeline_every),
        argmax_scan=scan_argmax(classes, interval),
    )


def _slowest_stage(layers, links, collector: VectorBufferLink | None) -> int:
    stages = [*layers, *links]
    if collector is not None:
        stages.append(collector)
    return max(stage.cycles_per_vector for stage in stages)


# -- foldings -----------------------------------------------------------------------------------


def check_design(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    unit: DotProduct = BINARY,
) -> None:
    """Refuse, with a one-line error, a folding or pipelining the generator cannot build."""
    require_mlp(model, "the hardware generator")
    check_pipelining(pipeline_every)
    unit.check(model)
    if len(folding) != len(model.layers):
        raise BchwError(
            f"the folding names {len(folding)} layers; the model has {len(model.layers)}"
        )
    for index, (layer, f) in enumerate(zip(model.layers, folding, strict=True)):
        if not 1 <= f.pe <= layer.out_features:
            raise BchwError(
                f"layer {index}: PE {f.pe} must lie in 1..{layer.out_features} (its neurons)"
            )
        if not 1 <= f.simd <= layer.in_features:
            raise BchwError(
                f"layer {index}: SIMD {f.simd} must lie in 1..{layer.in_features} (its inputs)"
            )
    check_synapses_per_cycle(folding)


def check_pipelining(pipeline_every: int) -> None:
    if pipeline_every < 0:
        raise BchwError(f"--pipeline-every must be 0 (no registers) or more, got {pipeline_every}")


def check_synapses_per_cycle(folding: list[LayerFolding]) -> None:
    """Refuse a folding too parallel to generate or to fit any chip."""
    per_cycle = sum(f.pe * f.simd for f in folding)
    if per_cycle > MAX_SYNAPSES_PER_CYCLE:
        raise BchwError(
            f"this folding computes {per_cycle} synapses per cycle (limit "
            f"{MAX_SYNAPSES_PER_CYCLE}); fold the large layers with --pe/--simd"
        )


def candidates(n: int) -> list[int]:
    """Parallelism worth considering for a dimension of size n: powers of two and n itself."""
    values = {n}
    p = 1
    while p < n:
        values.add(p)
        p *= 2
    return sorted(values)


def _cycles(n_in: int, n_out: int, pe: int, simd: int) -> int:
    return math.ceil(n_out / pe) * math.ceil(n_in / simd)


def default_folding(
    model: IntegerModel, budget: int = DEFAULT_SYNAPSES_PER_CYCLE
) -> list[LayerFolding]:
    """Balance the layers: the fewest synapses per cycle that meet one common interval.

    The target interval is the network's synapse count divided by ``budget``. PE and SIMD come
    from powers of two and the full sizes. Chains where each layer's PE equals the next layer's
    SIMD are preferred: their links are small FIFOs (block RAM) instead of re-beating vector
    buffers, which cost a register per activation and a wide multiplexer. Among those, the
    chain with the lowest cost (synapses per cycle plus ``PE_COST`` per PE for its accumulator
    and requantizer; then the shortest interval) wins; only when no such chain meets the
    target does each layer take its own cheapest (PE, SIMD).
    """
    require_mlp(model, "the hardware generator")
    synapses = sum(layer.in_features * layer.out_features for layer in model.layers)
    target = max(1, math.ceil(synapses / budget))
    matched = _matched_folding(model, target)
    return matched if matched is not None else _independent_folding(model, target)


def _matched_folding(model: IntegerModel, target: int) -> list[LayerFolding] | None:
    """Dynamic programming over the layers with PE_l = SIMD_(l+1); None if no chain fits."""
    # best[pe] = (synapses per cycle, worst cycles, folding so far) for chains ending in pe.
    best: dict[int, tuple[int, int, list[LayerFolding]]] = {}
    for index, layer in enumerate(model.layers):
        n_in, n_out = layer.in_features, layer.out_features
        simds = candidates(n_in) if index == 0 else sorted(best)
        step: dict[int, tuple[int, int, list[LayerFolding]]] = {}
        for simd in simds:
            before = (0, 0, []) if index == 0 else best[simd]
            for pe in candidates(n_out):
                cycles = _cycles(n_in, n_out, pe, simd)
                if cycles > target:
                    continue
                option = (
                    before[0] + pe * simd + PE_COST * pe,
                    max(before[1], cycles),
                    [*before[2], LayerFolding(pe, simd)],
                )
                if pe not in step or option[:2] < step[pe][:2]:
                    step[pe] = option
        if not step:
            return None
        best = step
    return min(best.values(), key=lambda option: option[:2])[2]


def _independent_folding(model: IntegerModel, target: int) -> list[LayerFolding]:
    """Each layer's cheapest (PE, SIMD) meeting ``target`` (or its fastest, if none does)."""
    folding = []
    for layer in model.layers:
        best = None
        for pe in candidates(layer.out_features):
            for simd in candidates(layer.in_features):
                cycles = _cycles(layer.in_features, layer.out_features, pe, simd)
                key = (cycles > target, pe * simd if cycles <= target else -pe * simd, pe)
                if best is None or key < best[0]:
                    best = (key, LayerFolding(pe, simd))
        assert best is not None
        folding.append(best[1])
    return folding


def unrolled_folding(model: IntegerModel) -> list[LayerFolding]:
    """Every layer unrolled (a convolution: all its channels over a whole window per cycle)."""
    return [
        LayerFolding(layer.out_features, layer.in_features) for layer in model.weighted_layers()
    ]


def folding_from_lists(
    model: IntegerModel, pe: list[int], simd: list[int], source: str = "--pe/--simd"
) -> list[LayerFolding]:
    n = len(model.weighted_layers())
    what = "layers" if model.is_mlp else "convolution and dense layers"
    for name, values in (("PE", pe), ("SIMD", simd)):
        if len(values) != n:
            raise BchwError(f"{source} gives {len(values)} {name} values; the model has {n} {what}")
    return [LayerFolding(p, s) for p, s in zip(pe, simd, strict=True)]


def folding_from_file(model: IntegerModel, path: str | Path) -> list[LayerFolding]:
    """Read ``{"layers": [{"pe": P, "simd": S}, ...]}`` (a manifest's ``layers`` also works)."""
    path = Path(path)
    try:
        document = jsondoc.parse(path.read_bytes())
    except OSError as exc:
        raise BchwError(f"cannot read folding file {path}: {exc.strerror}") from None
    except jsondoc.JsonProblem as exc:
        raise BchwError(f"folding file {path} is not valid JSON: {exc}") from None
    layers = document.get("layers") if isinstance(document, dict) else None
    if not isinstance(layers, list):
        raise BchwError(f'folding file {path} needs {{"layers": [{{"pe": P, "simd": S}}, ...]}}')

    def whole(entry: object, key: str) -> int:
        value = entry.get(key) if isinstance(entry, dict) else None
        if type(value) is not int:  # not 1.5, not true, not "4"
            raise BchwError(f"folding file {path}: every layer needs integer 'pe' and 'simd'")
        return value

    pe = [whole(entry, "pe") for entry in layers]
    simd = [whole(entry, "simd") for entry in layers]
    return folding_from_lists(model, pe, simd, source=f"folding file {path}")


def folding_text(folding: list[LayerFolding] | tuple[LayerFolding, ...], compact=False) -> str:
    """``layer 0 PE 4 SIMD 16, layer 1 ...`` (compact: ``4/16, ...``, PE/SIMD per layer): how
    the command line names a folding."""
    if compact:
        return ", ".join(f"{f.pe}/{f.simd}" for f in folding)
    return ", ".join(f"layer {k} PE {f.pe} SIMD {f.simd}" for k, f in enumerate(folding))
