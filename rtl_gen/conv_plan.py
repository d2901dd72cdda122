"""The design plan of a convolutional network, in plain Python (no Amaranth).

A convolutional design is a chain of stages, built in this order by
:class:`rtl_gen.cnn.ConvNetwork`:

- per convolution, a sliding window (:class:`WindowStage`), the layer engine of the
  convolution seen as a dense layer over one window (a :class:`~rtl_gen.plan.LayerPlan`: PE
  over output channels, SIMD over the ``k * k * C`` window) and, unless PE covers every
  channel, a vector buffer that gathers the engine's beats into one pixel;
- per pooling, a :class:`PoolStage`;
- before the first dense layer, a vector buffer that re-beats the flattened feature map into
  that engine's SIMD beats; the dense layers linked as in the MLP's plan; a collector of the
  scores and the argmax (:class:`ArgmaxStage`).

The latency and the initiation interval come from the cycle model (:mod:`rtl_gen.cycles`),
which steps the chain's handshakes cycle by cycle: exact, whatever back-pressure the folding
causes between the stages.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from bchw.core.intmodel import ConvLayer, IntegerModel, MaxPoolLayer
from bchw.errors import BchwError
from rtl_gen import DEFAULT_PIPELINE_EVERY, DEFAULT_SYNAPSES_PER_CYCLE, cycles
from rtl_gen.plan import (
    BINARY,
    PE_COST,
    DesignPlan,
    DotProduct,
    FifoLink,
    LayerFolding,
    LayerPlan,
    VectorBufferLink,
    argmax_latency,
    candidates,
    check_pipelining,
    check_synapses_per_cycle,
    default_folding,
    link_between,
    plan_design,
    plan_layer,
    scan_argmax,
)

# Images the cycle model runs at most to find the steady interval between results.
MAX_TIMING_IMAGES = 8


@dataclass(frozen=True)
class WindowPhase:
    """One step of a sliding window's reader over the pixel held at its memory's output: the
    beat being assembled already holds ``gathered`` values from earlier pixels, and the step
    uses ``take`` of the pixel's channels from ``offset`` on.

    A *full* step completes a beat (``gathered + take == simd``) and sends it; otherwise the
    step copies the pixel's last channels into the gather register, or, on the window's last
    pixel, sends the beat padded with zeros."""

    gathered: int
    offset: int
    take: int
    full: bool
    pixel_done: bool  # the step uses the pixel's last channel
    next: int  # the phase after it (after a window's last step: phase 0)


@functools.cache
def window_phases(channels: int, simd: int, pixels: int) -> tuple[tuple[WindowPhase, ...], int]:
    """The distinct steps of reading one window of ``pixels`` pixels of ``channels`` values
    in beats of ``simd`` (phase 0 starts every window), and the steps per window."""
    index: dict[tuple[int, int], int] = {}
    found: list[list] = []  # [gathered, offset, take, full, pixel_done, next]
    gathered = steps = 0
    previous = None
    for pixel in range(pixels):
        offset = 0
        while True:
            rest = channels - offset
            full = gathered + rest >= simd
            take = simd - gathered if full else rest
            key = (gathered, offset)
            if key not in index:
                index[key] = len(found)
                done = not full or offset + take == channels
                found.append([gathered, offset, take, full, done, 0])
            if previous is not None:
                found[previous][5] = index[key]
            previous = index[key]
            steps += 1
            if full:
                gathered, offset = 0, offset + take
                if offset == channels:
                    break
            else:
                gathered = 0 if pixel == pixels - 1 else gathered + rest
                break
    return tuple(WindowPhase(*f) for f in found), steps


@dataclass(frozen=True)
class WindowStage:
    """A sliding window: ``height x width`` pixels of ``channels`` values in, ``k x k`` windows
    (``padding`` zeros each side) out as ``beats`` beats of ``simd`` values."""

    channels: int
    height: int
    width: int
    kernel: int
    padding: int
    bits: int
    simd: int

    kind = "window"

    @property
    def out_height(self) -> int:
        return self.height + 2 * self.padding - self.kernel + 1

    @property
    def out_width(self) -> int:
        return self.width + 2 * self.padding - self.kernel + 1

    @property
    def beats(self) -> int:
        return math.ceil(self.kernel * self.kernel * self.channels / self.simd)

    @property
    def phases(self) -> tuple[WindowPhase, ...]:
        return window_phases(self.channels, self.simd, self.kernel * self.kernel)[0]

    @property
    def cycles_per_window(self) -> int:
        """One step per cycle: at least one per pixel (a memory read each), one per beat."""
        return window_phases(self.channels, self.simd, self.kernel * self.kernel)[1]

    @property
    def gather_lanes(self) -> int:
        """Values of a beat gathered from earlier pixels: the gather register's size."""
        return max((p.gathered + p.take for p in self.phases if not p.full), default=0)

    @property
    def cycles_per_vector(self) -> int:
        """Cycles per image when the window is the slowest stage."""
        return self.out_height * self.out_width * self.cycles_per_window

    @property
    def line_buffer_bits(self) -> int:
        return (self.kernel + 1) * self.width * self.channels * self.bits


@dataclass(frozen=True)
class PoolStage:
    """``size x size`` max pooling of ``height x width`` pixels of ``channels`` values."""

    channels: int
    height: int
    width: int
    size: int
    bits: int

    kind = "maxpool"

    @property
    def cycles_per_vector(self) -> int:
        return self.height * self.width  # a pixel per cycle


@dataclass(frozen=True)
class ArgmaxStage:
    classes: int
    latency: int
    scan: bool = False  # a scanning argmax (rtl_gen.plan.scan_argmax), else a tree

    kind = "argmax"

    @property
    def cycles_per_vector(self) -> int:
        return self.latency + 1 if self.scan else 1


Stage = WindowStage | LayerPlan | VectorBufferLink | FifoLink | PoolStage | ArgmaxStage


@dataclass(frozen=True)
class ConvDesignPlan:
    """A whole convolutional network: its stages in order, and its exact timing."""

    model: IntegerModel
    folding: tuple[LayerFolding, ...]
    pipeline_every: int
    unit: DotProduct
    layers: tuple[LayerPlan, ...]  # the convolution and dense engines, in order
    stages: tuple[Stage, ...]
    progress: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def _timing(self) -> tuple[int, int]:
        # Computed when first asked for: a large network's cycle model takes minutes, and an
        # analytical estimate of its MAC baseline never needs it.
        return measure_timing(self.stages, self.input_beats, self.progress)

    @property
    def latency(self) -> int:
        """Cycles from an image's first beat to its result, the pipeline empty (cycle model)."""
        return self._timing[0]

    @property
    def initiation_interval(self) -> int:
        """Cycles between results when images follow each other (cycle model)."""
        return self._timing[1]

    @property
    def adder_tree(self) -> str:
        return self.unit.adder_tree

    @property
    def input_lanes(self) -> int:
        return self.model.input_shape[0]  # a pixel per beat, channels in the lanes

    @property
    def input_beats(self) -> int:
        _, h, w = self.model.input_shape
        return h * w

    @property
    def argmax_latency(self) -> int:
        return self.stages[-1].latency

    @property
    def synapses_per_cycle(self) -> int:
        return sum(f.pe * f.simd for f in self.folding)


def stage_cycles(stage: Stage) -> int:
    """A stage's own cycles per image when nothing around it waits (an engine's ``nf * sf``
    per output pixel; a gathering buffer's beats per pixel)."""
    if isinstance(stage, LayerPlan):
        return stage.layer.positions * (stage.cycles_per_vector + stage.pipeline_depth)
    return stage.cycles_per_vector


def check_conv_design(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    unit: DotProduct = BINARY,
) -> None:
    """Refuse, in one line, a folding the generator cannot build for a convolutional model."""
    check_pipelining(pipeline_every)
    layers = model.weighted_layers()
    for index, layer in enumerate(layers):
        if layer.weight_bits != unit.weight_bits:
            raise BchwError(
                f"layer {index} has {layer.weight_bits}-bit weights; the {unit.kind} unit "
                f"takes {unit.weight_bits}-bit weights"
            )
    if len(folding) != len(layers):
        raise BchwError(
            f"the folding names {len(folding)} layers; the model has {len(layers)} "
            "convolution and dense layers"
        )
    for index, (layer, f) in enumerate(zip(layers, folding, strict=True)):
        what = "output channels" if isinstance(layer, ConvLayer) else "neurons"
        inputs = "window values" if isinstance(layer, ConvLayer) else "inputs"
        if not 1 <= f.pe <= layer.out_features:
            raise BchwError(
                f"layer {index} ({layer.token()}): PE {f.pe} must lie in "
                f"1..{layer.out_features} (its {what})"
            )
        if not 1 <= f.simd <= layer.in_features:
            raise BchwError(
                f"layer {index} ({layer.token()}): SIMD {f.simd} must lie in "
                f"1..{layer.in_features} (its {inputs})"
            )
    check_synapses_per_cycle(folding)


def conv_stages(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    requant_registered: bool = True,
    unit: DotProduct = BINARY,
) -> tuple[tuple[LayerPlan, ...], tuple[Stage, ...]]:
    """The engines and the whole chain of stages (the folding already checked)."""
    stages: list[Stage] = []
    engines: list[LayerPlan] = []
    folds = iter(folding)
    c, h, w = model.input_shape
    bits = model.input_bits
    spatial = True  # the stream carries whole pixels
    for layer in model.layers:
        if isinstance(layer, MaxPoolLayer):
            stages.append(PoolStage(c, h, w, layer.size, bits))
            h, w = layer.out_height, layer.out_width
            continue
        f = next(folds)
        plan = plan_layer(layer, f.pe, f.simd, pipeline_every, requant_registered, unit)
        if isinstance(layer, ConvLayer):
            stages.append(WindowStage(c, h, w, layer.kernel, layer.padding, bits, f.simd))
            stages.append(plan)
            if f.pe != layer.out_channels:  # gather the engine's beats into one pixel
                stages.append(VectorBufferLink(layer.out_channels, f.pe, layer.out_channels))
            c, h, w = layer.out_channels, layer.out_height, layer.out_width
        else:
            if spatial:  # flatten: the feature map's pixels into SIMD beats
                stages.extend(flatten_links(c, h * w, plan))
                spatial = False
            else:
                stages.append(link_between(engines[-1], plan))
            stages.append(plan)
        engines.append(plan)
        bits = layer.output_bits
    last, classes = engines[-1], model.num_classes
    if last.pe != classes:
        stages.append(VectorBufferLink(classes, last.pe, classes))
    # A bound on the interval from below, enough to decide the scan: each stage's own cycles
    # per image, an engine's without its pipeline's depth (it overlaps the positions).
    interval = max(
        stage.layer.positions * stage.cycles_per_vector
        if isinstance(stage, LayerPlan)
        else stage_cycles(stage)
        for stage in stages
    )
    stages.append(
        ArgmaxStage(
            classes,
            argmax_latency(classes, interval, pipeline_every),
            scan_argmax(classes, interval),
        )
    )
    return tuple(engines), tuple(stages)


def flatten_links(channels: int, pixels: int, plan: LayerPlan) -> list[VectorBufferLink | FifoLink]:
    """What turns a stream of pixels into the first dense layer's SIMD beats.

    The pixels in raster order, channels innermost, already are the flattened vector: with
    SIMD = C they are its beats; a divisor of C re-beats each pixel, and a multiple of C that
    divides the vector gathers that many values (registers for a pixel or a beat, twice). A
    folded engine stops taking beats while it computes its other neuron folds, so a FIFO of
    one vector's beats (block RAM) lets the feature map of the next image flow meanwhile. Any
    other SIMD needs the whole vector in registers, twice (which also decouples the engine):
    the default folding avoids it.
    """
    simd, n = plan.simd, channels * pixels
    if simd == channels:
        links: list[VectorBufferLink | FifoLink] = []
    elif channels % simd == 0:
        links = [VectorBufferLink(channels, channels, simd)]
    elif simd % channels == 0 and n % simd == 0:
        links = [VectorBufferLink(simd, channels, simd)]
    else:
        return [VectorBufferLink(n, channels, simd)]
    if plan.neuron_folds > 1:
        beats = plan.synapse_folds
        links.append(FifoLink(simd, beats + 2, beats))
    return links


def flatten_simds(channels: int, pixels: int) -> list[int]:
    """The first dense layer's SIMD values that need no whole-vector buffer (and the whole
    vector, for an unrolled layer)."""
    n = channels * pixels
    options = set(candidates(n)) | {channels}
    return sorted(
        s for s in options if s == n or channels % s == 0 or (s % channels == 0 and n % s == 0)
    )


def measure_timing(
    stages: tuple[Stage, ...], beats_per_image: int, progress: Callable[[int], None] | None = None
) -> tuple[int, int]:
    """``(latency, initiation interval)`` from the cycle model: the first image's cycles from
    its first beat to its result, and the steady spacing of results (two equal gaps in a row)
    when images follow each other back to back."""
    # A generous bound: every stage working alone, one after another, many times over.
    serial = beats_per_image + sum(stage_cycles(stage) for stage in stages)
    bound = 16 * MAX_TIMING_IMAGES * serial + 100_000
    timing = cycles.run(
        stages, beats_per_image, MAX_TIMING_IMAGES, bound, progress, until_steady=True
    )
    return timing.latency, timing.gaps[-1]


def plan_conv_design(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    unit: DotProduct = BINARY,
    requant_registered: bool = True,
    progress: Callable[[int], None] | None = None,
) -> ConvDesignPlan:
    """The plan of a convolutional network (the folding checked by :func:`check_conv_design`);
    its timing is computed when first asked for, and ``progress`` is then told the cycle
    model's cycle now and then."""
    check_conv_design(model, folding, pipeline_every, unit)
    engines, stages = conv_stages(model, folding, pipeline_every, requant_registered, unit)
    return ConvDesignPlan(
        model=model,
        folding=tuple(folding),
        pipeline_every=pipeline_every,
        unit=unit,
        layers=engines,
        stages=stages,
        progress=progress,
    )


# -- the default folding ------------------------------------------------------------------------


def default_conv_folding(
    model: IntegerModel, budget: int = DEFAULT_SYNAPSES_PER_CYCLE
) -> list[LayerFolding]:
    """Balance the layers at one interval per image, as the MLP's default does.

    The target interval is the network's additions per image divided by ``budget``, but never
    below what the slowest sliding window needs (a pixel read per cycle: ``k * k`` cycles
    per output pixel): no engine is made faster than a window can feed it. Each layer then
    takes the cheapest (PE, SIMD), powers of two or the full size, whose cycles per image
    meet the target (``positions * nf * sf``, or for a convolution its window's steps per
    output pixel where those are more: a SIMD that divides neither the channels nor the
    window adds steps; cost: synapses per cycle plus ``PE_COST`` per PE; then the fewer
    cycles), or its fastest.
    """
    layers = model.weighted_layers()
    work = sum(layer.positions * layer.in_features * layer.out_features for layer in layers)
    floor = max(
        (layer.positions * layer.kernel**2 for layer in layers if isinstance(layer, ConvLayer)),
        default=1,
    )
    target = max(math.ceil(work / budget), floor)
    folding = []
    first_dense = next((layer for layer in layers if not isinstance(layer, ConvLayer)), None)
    for layer in layers:
        best = None
        simds = candidates(layer.in_features)
        if layer is first_dense and not model.is_mlp:
            c, h, w = _flatten_shape(model)
            simds = flatten_simds(c, h * w)
        for pe in candidates(layer.out_features):
            for simd in simds:
                per_position = math.ceil(layer.out_features / pe) * math.ceil(
                    layer.in_features / simd
                )
                if isinstance(layer, ConvLayer):  # its window feeds it no faster than this
                    steps = window_phases(layer.in_channels, simd, layer.kernel**2)[1]
                    per_position = max(per_position, steps)
                cycles_per_image = layer.positions * per_position
                meets = cycles_per_image <= target
                cost = pe * simd + PE_COST * pe
                key = (not meets, cost if meets else -pe * simd, cycles_per_image)
                if best is None or key < best[0]:
                    best = (key, LayerFolding(pe, simd))
        assert best is not None
        folding.append(best[1])
    return folding


# -- either kind of network ---------------------------------------------------------------------


def network_folding(model: IntegerModel, budget: int = DEFAULT_SYNAPSES_PER_CYCLE):
    """The default folding of an MLP (:func:`rtl_gen.plan.default_folding`) or a CNN
    (:func:`default_conv_folding`)."""
    return default_folding(model, budget) if model.is_mlp else default_conv_folding(model, budget)


def plan_network(
    model: IntegerModel,
    folding: list[LayerFolding],
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    unit: DotProduct = BINARY,
    progress: Callable[[int], None] | None = None,
) -> DesignPlan | ConvDesignPlan:
    """The design plan of an MLP (:func:`rtl_gen.plan.plan_design`) or a CNN
    (:func:`plan_conv_design`)."""
    if model.is_mlp:
        return plan_design(model, folding, pipeline_every, unit)
    return plan_conv_design(model, folding, pipeline_every, unit, progress=progress)


def _flatten_shape(model: IntegerModel) -> tuple[int, int, int]:
    """The feature map the first dense layer flattens."""
    shape = model.input_shape
    for layer in model.layers:
        if layer.kind == "dense":
            return shape
        shape = layer.output_shape
    raise AssertionError("no dense layer")
