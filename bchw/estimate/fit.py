"""Fold to a chip: the folding with the most images per second that fits a device.

For a model, a dot-product unit (binary, or the MAC baseline's) and a :class:`Device`,
:func:`fit` searches per-layer PE and SIMD (powers of two and the full sizes, as the default
folding does) and prices every candidate with the analytical model (:mod:`bchw.estimate.analytic`,
block RAMs counted the way synthesis builds them: a W-bit by D-word memory fills
``ceil(W / width) x ceil(D / depth)`` blocks of the family's cheapest shape). It tries the
intervals the layers can reach from the shortest up; at each it takes per layer the cheapest
option that meets it (for an MLP by dynamic programming over the layers, the links between
them priced in), weighing LUTs, flip-flops, block RAM and DSP blocks by how much of the chip's
allowance each uses, and reweighs towards a resource that overflows; where that finds nothing
(a small chip full in both logic and block RAM) an MLP's search keeps, per layer, a few partial
foldings within every resource at once, before giving the interval up. The first interval
whose whole design fits wins; the next shorter one says which resource binds. With
``target_fps`` it takes the longest interval that still meets the rate instead, so the design
is the smallest that does.

The allowance is the chip's LUTs and flip-flops less ``margin`` (room for placement and
routing, and for the model's error) and all of its block RAMs and DSP blocks (counted, not
fitted). Images per second are at the device's target clock (:mod:`bchw.estimate.devices`);
place and route (``--pnr``) measures the real one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bchw.core.intmodel import ConvLayer, IntegerModel
from bchw.errors import BchwError
from bchw.estimate.analytic import (
    Counts,
    fifo_counts,
    layer_counts,
    load_coefficients,
    resources,
    vector_buffer_counts,
    window_counts,
)
from bchw.estimate.devices import DEFAULT_MARGIN, DEVICE_TABLE, Device
from rtl_gen import DEFAULT_PIPELINE_EVERY
from rtl_gen.conv_plan import (
    ConvDesignPlan,
    WindowStage,
    _flatten_shape,
    flatten_simds,
    plan_network,
    stage_cycles,
)
from rtl_gen.plan import (
    BINARY,
    MAX_SYNAPSES_PER_CYCLE,
    DesignPlan,
    DotProduct,
    LayerFolding,
    LayerPlan,
    VectorBufferLink,
    candidates,
    folding_text,
    plan_layer,
)

FIT_RESOURCES = ("lut", "ff", "bram", "dsp")
LABELS = {"lut": "LUTs", "ff": "flip-flops", "bram": "block RAMs", "dsp": "DSP blocks"}
# LUTs a LUT-RAM cell occupies: an ECP5 TRELLIS_DPR16X4 takes a slice pair for its bits and
# one for its write port (6 LUT4 sites); a 7-series RAM32M or RAM64M a SLICEM's 4 LUT6.
LUTRAM_LUTS = {"ecp5": 6, "xc7": 4, "ice40": 0, "gowin": 4}
# Logic cells nextpnr places per LUT site that Yosys hands it. On ECP5 packing adds cells (the
# CCU2C that carries a chain's carry-out into general routing, among others): 19,805
# TRELLIS_COMB for 16,987 LUT4 sites (digits at PE/SIMD 32/4, 16/32, 2/16 on an LFE5U-25F) and
# 81,327 for 68,785 (the MNIST MLP at 16/64, 64/16, 16/64, 1/16 on an LFE5U-85F, 97 %: nextpnr
# found no legal placement). The families placed without a measurement, and those only
# synthesized, count sites as they are.
PLACED_CELLS_PER_SITE = {"ecp5": 1.18, "ice40": 1.0, "xc7": 1.0, "gowin": 1.0}
# Logic cells per flip-flop on top: an iCE40 logic cell holds one LUT4 and one flip-flop, and a
# flip-flop that no LUT of its own feeds takes a cell of its own. Measured: 4,843 ICESTORM_LC
# for 2,892 LUT4 and 2,367 flip-flops (digits at PE/SIMD 2/16, 1/2, 10/1 on an iCE40UP5K).
# ECP5 and 7-series slices place flip-flops beside other LUTs.
PLACED_CELLS_PER_FF = {"ecp5": 0.0, "ice40": 0.82, "xc7": 0.0, "gowin": 0.0}
# A layer is only unrolled (constant weights, one tree per neuron) up to this many synapses:
# beyond, its trees alone outgrow every chip of the table, and pricing them takes long.
MAX_UNROLLED_SYNAPSES = 1 << 14
SHORTER_TRIES = 3  # intervals tried below the bisection's, in case fitting is not monotone
REWEIGHTS = 3  # tries per interval, each weighing the overflowing resources four times more


@dataclass
class FitResult:
    """The folding chosen for ``device``, what it uses and what stops a faster one."""

    device: Device
    design: str  # "binary" or "mac"
    folding: list[LayerFolding]
    interval: int  # cycles per image, exact (a CNN's from its cycle model)
    clock_mhz: float
    usage: dict[str, float]  # lut (LUT RAM included), ff, bram (device blocks), dsp
    limits: dict[str, float]
    margin: float
    binding: str  # what stops a faster folding, in words
    multipliers_in_dsp: bool
    target_fps: float | None = None
    plan: Any = field(default=None, repr=False)

    @property
    def images_per_second(self) -> int:
        return round(self.clock_mhz * 1e6 / self.interval)

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.device.key,
            "part": self.device.name,
            "design": self.design,
            "folding": [{"pe": f.pe, "simd": f.simd} for f in self.folding],
            "initiation_interval_cycles": self.interval,
            "clock_mhz": self.clock_mhz,
            "images_per_second": self.images_per_second,
            "usage": {k: round(v, 1) for k, v in self.usage.items()},
            "limits": self.limits,
            "utilization": {
                k: round(self.usage[k] / cap, 3) if (cap := self.device.capacity[k]) else None
                for k in FIT_RESOURCES
            },
            "margin": self.margin,
            "binding": self.binding,
            "multipliers_in_dsp": self.multipliers_in_dsp,
            "target_fps": self.target_fps,
        }


def limits(device: Device, margin: float) -> dict[str, float]:
    """What a design may use: LUTs and flip-flops less the margin, every block RAM and DSP."""
    return {
        "lut": math.floor(device.lut * (1 - margin)),
        "ff": math.floor(device.ff * (1 - margin)),
        "bram": device.bram,
        "dsp": device.dsp,
    }


def usage(total: dict[str, Any], device: Device) -> dict[str, float]:
    """A design's use of the chip's resources from the analytical model's totals: LUTs with
    those inside carry cells (an ECP5 CCU2C holds two LUT4 sites) and those LUT RAM occupies,
    as the logic cells that place and route packs them into (:data:`PLACED_CELLS_PER_SITE`,
    and on iCE40 the cells that flip-flops take, :data:`PLACED_CELLS_PER_FF`);
    block RAM in the device's blocks (a 7-series RAMB18 is half of a 36 kbit block)."""
    from bchw.estimate.synth import family

    bram = total["bram_cost"] / 2 if device.family == "xc7" else total["bram_cost"]
    luts = family(device.family).luts_with_carry(total["lut"], total["carry"])
    sites = luts + LUTRAM_LUTS[device.family] * total["lutram"]
    cells = sites * PLACED_CELLS_PER_SITE[device.family]
    return {
        "lut": cells + total["ff"] * PLACED_CELLS_PER_FF[device.family],
        "ff": total["ff"],
        "bram": bram,
        "dsp": total["dsp"],
    }


def overflow(use: dict[str, float], allowed: dict[str, float]) -> dict[str, float]:
    """Each resource's use over its allowance (above 1: it does not fit)."""
    out = {}
    for key in FIT_RESOURCES:
        if allowed[key] > 0:
            out[key] = use[key] / allowed[key]
        else:
            out[key] = math.inf if use[key] > 0 else 0.0
    return out


def describe_overflow(use: dict[str, float], allowed: dict[str, float], device: Device) -> str:
    ratios = overflow(use, allowed)
    worst = max(ratios, key=lambda k: ratios[k])
    return f"{LABELS[worst]}: needs {_num(use[worst])} of {_num(allowed[worst])}" + (
        " allowed" if worst in ("lut", "ff") else f" on the {device.name}"
    )


def _num(value: float) -> str:
    return f"{value:,.1f}".replace(".0", "") if value != int(value) else f"{int(value):,}"


# -- pricing -------------------------------------------------------------------------------------


class _Pricer:
    """Resources of parts of a design (cached), and the scalar cost the search minimizes."""

    def __init__(self, device: Device, dsp: bool, coefficients: dict[str, Any]):
        self.device, self.dsp, self.coefficients = device, dsp, coefficients
        self.empty = self._use(Counts())  # a part's constant cost

    def _use(self, counts: Counts) -> dict[str, float]:
        part = {"part": "p", **counts.as_dict()}
        total = resources([part], self.device.family, self.dsp, self.coefficients)["total"]
        return usage(total, self.device)

    def use(self, counts: Counts) -> dict[str, float]:
        """The part's resources without the per-part constant (parts are summed)."""
        raw = self._use(counts)
        return {k: raw[k] - self.empty[k] for k in FIT_RESOURCES}


def _scalar(use: dict[str, float], weights: dict[str, float], allowed: dict[str, float]) -> float:
    return sum(
        weights[k] * use[k] / allowed[k] if allowed[k] else (math.inf if use[k] else 0.0)
        for k in FIT_RESOURCES
    )


def _add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a[k] + b[k] for k in FIT_RESOURCES}


# -- the search ----------------------------------------------------------------------------------


@dataclass
class _Option:
    folding: LayerFolding
    cycles: int  # cycles per image of this layer alone
    counts: Counts


def _layer_options(
    model: IntegerModel, unit: DotProduct, pipeline_every: int
) -> list[list[_Option]]:
    """Per weighted layer, every (PE, SIMD) worth trying, with its cycles per image and the
    counts of its engine (a convolution's: with its window and the buffer that gathers its
    output channels into pixels)."""
    layers = model.weighted_layers()
    first_dense = next((layer for layer in layers if not isinstance(layer, ConvLayer)), None)
    shapes = _input_shapes(model)
    out = []
    for index, layer in enumerate(layers):
        simds = candidates(layer.in_features)
        if layer is first_dense and not model.is_mlp:
            c, h, w = _flatten_shape(model)
            simds = flatten_simds(c, h * w)
        options = []
        for pe in candidates(layer.out_features):
            for simd in simds:
                unrolled = pe == layer.out_features and simd == layer.in_features
                if unrolled and layer.in_features * layer.out_features > MAX_UNROLLED_SYNAPSES:
                    continue
                if pe * simd > MAX_SYNAPSES_PER_CYCLE:
                    continue
                plan = plan_layer(layer, pe, simd, pipeline_every, True, unit)
                counts = layer_counts(plan)
                # As the default folding counts them: the engine's folds per output position,
                # or its window's steps where those are more (the engine's pipeline overlaps
                # the positions, so its depth adds nothing per image).
                cycles = layer.positions * plan.cycles_per_vector
                if isinstance(layer, ConvLayer):
                    c, h, w, bits = shapes[index]
                    window = WindowStage(c, h, w, layer.kernel, layer.padding, bits, simd)
                    counts += window_counts(window)
                    cycles = max(cycles, window.cycles_per_vector)
                    if pe != layer.out_channels:
                        gather = VectorBufferLink(layer.out_channels, pe, layer.out_channels)
                        counts += vector_buffer_counts(gather, layer.output_bits)
                options.append(_Option(LayerFolding(pe, simd), cycles, counts))
        out.append(options)
    return out


def _input_shapes(model: IntegerModel) -> list[tuple[int, int, int, int]]:
    """Per weighted layer, the (channels, height, width, bits) of the feature map it reads."""
    shapes = []
    c, h, w = model.input_shape if not model.is_mlp else (0, 0, 0)
    bits = model.input_bits
    for layer in model.layers:
        if layer.kind == "maxpool":
            h, w = layer.out_height, layer.out_width
            continue
        shapes.append((c, h, w, bits))
        if isinstance(layer, ConvLayer):
            c, h, w = layer.out_channels, layer.out_height, layer.out_width
        bits = layer.output_bits
    return shapes


def _mlp_link_counts(a: LayerFolding, layer_a, b: LayerFolding) -> Counts:
    """The link after dense layer ``a`` into a layer of SIMD ``b.simd`` (rtl_gen.plan)."""
    bits = layer_a.output_bits
    if a.pe == b.simd:
        nf = math.ceil(layer_a.out_features / a.pe)
        return fifo_counts(a.pe * bits, nf + 2)
    link = VectorBufferLink(layer_a.out_features, a.pe, b.simd)
    return vector_buffer_counts(link, bits)


def _link_use(pricer, link_cache: dict, layers, index: int, prev: _Option, option: _Option):
    """What the link from layer ``index - 1`` at ``prev`` into ``option`` uses (cached)."""
    key = (index, prev.folding, option.folding.simd)
    if key not in link_cache:
        link = _mlp_link_counts(prev.folding, layers[index - 1], option.folding)
        link_cache[key] = pricer.use(link)
    return link_cache[key]


def _collector_use(pricer, model: IntegerModel, last: LayerFolding) -> dict | None:
    """What the collector after the last layer uses, where its PE is not all the classes."""
    classes = model.num_classes
    if last.pe == classes:
        return None
    link = VectorBufferLink(classes, last.pe, classes)
    return pricer.use(vector_buffer_counts(link, model.layers[-1].output_bits))


def _choose_mlp(
    model: IntegerModel,
    options: list[list[_Option]],
    target: int,
    weights: dict[str, float],
    allowed: dict[str, float],
    pricer: _Pricer,
    link_cache: dict,
    option_use: dict,
) -> list[LayerFolding] | None:
    """The cheapest folding whose layers each meet ``target`` cycles, links priced in, by
    dynamic programming over the layers (state: the last layer's PE)."""
    layers = model.layers
    # best[k] = (cost, folding so far, last option) keyed by the last option's index
    best: dict[int, tuple[float, list[_Option]]] = {}
    for index, layer_options in enumerate(options):
        step: dict[int, tuple[float, list[_Option]]] = {}
        for k, option in enumerate(layer_options):
            if option.cycles > target:
                continue
            own = _scalar(option_use[index, k], weights, allowed)
            if index == 0:
                step[k] = (own, [option])
                continue
            choice = None
            for cost, chain in best.values():
                link = _link_use(pricer, link_cache, layers, index, chain[-1], option)
                total = cost + own + _scalar(link, weights, allowed)
                if choice is None or total < choice[0]:
                    choice = (total, [*chain, option])
            if choice is not None:
                step[k] = choice
        if not step:
            return None
        best = step

    # The collector after the last layer, where its PE is not all the classes.
    def finish(entry: tuple[float, list[_Option]]) -> float:
        collector = _collector_use(pricer, model, entry[1][-1].folding)
        return entry[0] + (_scalar(collector, weights, allowed) if collector else 0.0)

    return [o.folding for o in min(best.values(), key=finish)[1]]


# Partial foldings the fallback search keeps per last layer option: the best few by each
# resource alone and by their weighed sum.
DIVERSE_KEEP = 4


def _choose_mlp_within(
    model: IntegerModel,
    options: list[list[_Option]],
    target: int,
    allowed: dict[str, float],
    pricer: _Pricer,
    link_cache: dict,
    option_use: dict,
) -> list[LayerFolding] | None:
    """Like :func:`_choose_mlp`, but only foldings whose summed resources stay within
    ``allowed`` at every layer, and per state a few partial foldings instead of one: the
    cheapest by each resource alone and by their sum. Where each resource has its own
    cheapest folding and none of those fits (a small chip full in both logic and block RAM:
    the digits model on an iCE40UP5K), reweighing the sum swings between them; this finds
    the folding that is cheap enough in every resource at once."""
    layers = model.layers
    unit_weights = dict.fromkeys(FIT_RESOURCES, 1.0)
    # Each part of a design has the family's constant cost; the layers' prices leave it out.
    constant = {k: v * (len(layers) + 1) for k, v in pricer.empty.items()}

    def within(use: dict[str, float]) -> bool:
        return all(use[k] <= allowed[k] for k in FIT_RESOURCES)

    def diverse(entries: list[tuple[dict, list]]) -> list[tuple[dict, list]]:
        kept: dict[tuple, tuple[dict, list]] = {}
        orders = [lambda e: _scalar(e[0], unit_weights, allowed)]
        orders += [
            lambda e, k=k: (e[0][k], _scalar(e[0], unit_weights, allowed)) for k in FIT_RESOURCES
        ]
        for order in orders:
            for entry in sorted(entries, key=order)[:DIVERSE_KEEP]:
                kept.setdefault(tuple(o.folding for o in entry[1]), entry)
        return list(kept.values())

    best: dict[int, list[tuple[dict, list[_Option]]]] = {}
    for index, layer_options in enumerate(options):
        step: dict[int, list[tuple[dict, list[_Option]]]] = {}
        for k, option in enumerate(layer_options):
            if option.cycles > target:
                continue
            own = option_use[index, k]
            found = []
            if index == 0:
                found.append((_add(constant, own), [option]))
            for entries in best.values():
                for use, chain in entries:
                    link = _link_use(pricer, link_cache, layers, index, chain[-1], option)
                    found.append((_add(_add(use, own), link), [*chain, option]))
            found = [entry for entry in found if within(entry[0])]
            if found:
                step[k] = diverse(found)
        if not step:
            return None
        best = step
    finished = []
    for entries in best.values():
        for use, chain in entries:
            collector = _collector_use(pricer, model, chain[-1].folding)
            if collector:
                use = _add(use, collector)
            if within(use):
                finished.append((_scalar(use, unit_weights, allowed), [o.folding for o in chain]))
    return min(finished, key=lambda entry: entry[0])[1] if finished else None


def _choose_independent(
    options: list[list[_Option]],
    target: int,
    weights: dict[str, float],
    allowed: dict[str, float],
    option_use: dict,
) -> list[LayerFolding] | None:
    """Per layer the cheapest option meeting ``target`` (a CNN's layers: their links are
    gathers the whole-design check prices)."""
    folding = []
    for index, layer_options in enumerate(options):
        meeting = [
            (_scalar(option_use[index, k], weights, allowed), o.cycles, k)
            for k, o in enumerate(layer_options)
            if o.cycles <= target
        ]
        if not meeting:
            return None
        folding.append(layer_options[min(meeting)[2]].folding)
    return folding


def predicted_interval(plan: DesignPlan | ConvDesignPlan) -> int:
    """Cycles per image: an MLP's exact interval; for a CNN the slowest stage's (an engine's
    folds per position, a window's steps, a link's or a pool's beats), which its exact
    interval from the cycle model (computed for the chosen design only) matches where the
    stages overlap fully."""
    if isinstance(plan, DesignPlan):
        return plan.initiation_interval
    return max(
        stage.layer.positions * stage.cycles_per_vector
        if isinstance(stage, LayerPlan)
        else stage_cycles(stage)
        for stage in plan.stages
    )


def fit(
    model: IntegerModel,
    device: Device,
    unit: DotProduct = BINARY,
    margin: float = DEFAULT_MARGIN,
    target_fps: float | None = None,
    pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    coefficients: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> FitResult:
    """The folding of ``model`` with the most images per second on ``device`` (with
    ``target_fps``: the smallest that reaches it). A MAC unit is tried with its multipliers in
    DSP blocks and in LUTs, and the faster fit kept. Raises :class:`BchwError` (one line:
    what binds, and the smallest device of the table that fits) when nothing fits."""
    check_margin(margin)
    if target_fps is not None and not 0 < target_fps < math.inf:
        raise BchwError(f"--target-fps must be a positive number of images/s, got {target_fps}")
    search = _Search(model, unit, pipeline_every, coefficients or load_coefficients())
    chosen, failures = _over_flows(search, device, margin, target_fps, progress)
    if chosen is not None:
        return chosen
    best = min(failures, key=lambda exc: exc.worst)
    if best.best is not None:  # fits, but not at the rate asked
        raise _too_slow(best)
    smaller = search.smallest_device(margin)
    where = (
        f"the smallest device of the table that fits it: {smaller}"
        if smaller
        else "no device of the table fits it"
    )
    raise NoFitError(
        f"{model.arch()} does not fit the {device.name} at any folding: its smallest design "
        f"needs {best.reason}{_hints(search, device, margin)}; {where}",
        best.smallest,
    )


def _hints(search: _Search, device: Device, margin: float) -> str:
    """What would fit instead, in parentheses for the no-fit error (or nothing)."""
    found = [hint(search, device, margin) for hint in (_smaller_margin_hint, _unpipelined_hint)]
    found = [text for text in found if text]
    return f" ({'; '.join(found)})" if found else ""


# Margins the error tries, when nothing fits at the one asked for, to say which would do.
SMALLER_MARGINS = (0.1, 0.08, 0.06, 0.04, 0.02)


def _smaller_margin_hint(search: _Search, device: Device, margin: float) -> str:
    """Where a design fits only with less room kept free than asked (a small chip nearly full:
    the pipelined digits model on an iCE40UP5K fits with 4 %, places in 92 % of it and closes
    timing), the largest such margin and its folding, to say so in the error."""
    for smaller in SMALLER_MARGINS:
        if smaller >= margin:
            continue
        best = _over_flows(search, device, smaller, None, None)[0]
        if best is not None:
            return (
                f"with --margin {smaller:g}, PE/SIMD {folding_text(best.folding, compact=True)} "
                f"fits, {best.usage['lut'] / device.capacity['lut']:.0%} of the LUTs: --pnr "
                f"checks that it places"
            )
    return ""


def _unpipelined_hint(search: _Search, device: Device, margin: float) -> str:
    """Where the pipeline registers are what does not fit (small chips: the digits model on an
    iCE40UP5K), the folding that fits without them, to say so in the error."""
    if search.pipeline_every == 0:
        return ""
    light = _Search(search.model, search.unit, 0, search.coefficients)
    best = _over_flows(light, device, margin, None, None)[0]
    if best is None:
        return ""
    return (
        f"without pipeline registers, --pipeline-every 0, PE/SIMD "
        f"{folding_text(best.folding, compact=True)} fits, at a lower clock than "
        f"{device.clock_mhz:g} MHz: --pnr measures it"
    )


def _over_flows(
    search: _Search, device: Device, margin: float, target_fps, progress
) -> tuple[FitResult | None, list[_NoFit]]:
    """The search in each flow (:func:`_flows`): the fit with the most images per second, then
    the fewest LUTs (``None`` where none fits), and each flow's failure."""
    results, failures = [], []
    for dsp in _flows(search.unit, device):
        try:
            results.append(search.run(device, margin, dsp, target_fps, progress))
        except _NoFit as exc:
            failures.append(exc)
    chosen = min(results, key=lambda r: (r.interval, r.usage["lut"])) if results else None
    return chosen, failures


def _too_slow(failure: _NoFit) -> BchwError:
    """The error of a rate no folding that fits reaches, naming the fastest that does."""
    best = failure.best
    assert best is not None
    return BchwError(
        f"no folding reaches {failure.target_fps:,.0f} images/s on the {failure.device.name} at "
        f"{failure.device.clock_mhz:g} MHz: the fastest that fits gives "
        f"{best.images_per_second:,} (what binds: {best.binding})"
    )


def check_margin(margin: float) -> None:
    if not 0 <= margin < 1:  # also refuses nan
        raise BchwError(f"--margin must lie in 0..1 (the fraction of LUTs kept free), got {margin}")


def _flows(unit: DotProduct, device: Device) -> list[bool]:
    """Multipliers in DSP blocks, and in LUTs: both tried for a MAC design on a chip with DSP
    blocks (a designer uses them where they help); a binary design has none."""
    return [True, False] if unit.kind == "mac" and device.dsp else [False]


class _NoFit(Exception):
    def __init__(
        self, device: Device, reason: str, worst: float, target_fps=None, best=None, smallest=None
    ):
        super().__init__(reason)
        self.device, self.reason, self.worst = device, reason, worst
        self.target_fps, self.best, self.smallest = target_fps, best, smallest


class NoFitError(BchwError):
    """No folding fits the device; ``smallest`` is the smallest design tried (the folding of
    the longest interval), for a report that shows what it would need."""

    def __init__(self, message: str, smallest: list[LayerFolding] | None):
        super().__init__(message)
        self.smallest = smallest


class _Search:
    """One model and unit: its layers' options (priced per family and flow, cached) searched
    for a device."""

    def __init__(self, model, unit, pipeline_every, coefficients):
        self.model, self.unit, self.pipeline_every = model, unit, pipeline_every
        self.coefficients = coefficients
        self.options = _layer_options(model, unit, pipeline_every)
        self._priced: dict[tuple[str, bool], tuple[_Pricer, dict, dict]] = {}

    def priced(self, device: Device, dsp: bool) -> tuple[_Pricer, dict, dict]:
        key = (device.family, dsp)
        if key not in self._priced:
            pricer = _Pricer(device, dsp, self.coefficients)
            option_use = {
                (i, k): pricer.use(o.counts)
                for i, layer in enumerate(self.options)
                for k, o in enumerate(layer)
            }
            self._priced[key] = (pricer, option_use, {})
        return self._priced[key]

    def targets(self) -> tuple[list[int], int]:
        """The intervals worth trying, shortest first, and the longest of all. No folding is
        faster than its slowest layer at that layer's fastest; at the longest, every layer
        may take its cheapest option."""
        fastest = max(min(o.cycles for o in layer) for layer in self.options)
        slowest = max(o.cycles for layer in self.options for o in layer)
        found = {o.cycles for layer in self.options for o in layer if o.cycles >= fastest}
        return sorted(found), slowest

    def attempt(self, device: Device, allowed, dsp: bool, target: int):
        """The cheapest folding meeting ``target`` that fits, or None with why not (the
        overflow of the closest try, and its size)."""
        pricer, option_use, link_cache = self.priced(device, dsp)
        weights = dict.fromkeys(FIT_RESOURCES, 1.0)
        tried: set = set()
        closest: tuple[str, float, list | None] = ("no folding meets the interval", math.inf, None)
        for _ in range(REWEIGHTS + 1):
            if self.model.is_mlp:
                folding = _choose_mlp(
                    self.model, self.options, target, weights, allowed, pricer, link_cache,
                    option_use,
                )  # fmt: skip
            else:
                folding = _choose_independent(self.options, target, weights, allowed, option_use)
            if folding is None or tuple(folding) in tried:
                break
            tried.add(tuple(folding))
            if sum(f.pe * f.simd for f in folding) > MAX_SYNAPSES_PER_CYCLE:
                break  # too parallel to generate
            plan = plan_network(self.model, folding, self.pipeline_every, self.unit)
            total = _design_total(plan, device, dsp, self.coefficients)
            use = usage(total, device)
            ratios = overflow(use, allowed)
            worst = max(ratios.values())
            if worst <= 1:
                return (folding, plan, use, total["dsp"] > 0), closest
            if worst < closest[1]:
                closest = (describe_overflow(use, allowed, device), worst, list(folding))
            for k, ratio in ratios.items():
                if ratio > 1:
                    weights[k] *= 4
        if self.model.is_mlp:  # the reweighing found none: look for one within every resource
            folding = _choose_mlp_within(
                self.model, self.options, target, allowed, pricer, link_cache, option_use
            )
            if (
                folding is not None
                and tuple(folding) not in tried
                and sum(f.pe * f.simd for f in folding) <= MAX_SYNAPSES_PER_CYCLE
            ):
                plan = plan_network(self.model, folding, self.pipeline_every, self.unit)
                total = _design_total(plan, device, dsp, self.coefficients)
                use = usage(total, device)
                if max(overflow(use, allowed).values()) <= 1:
                    return (folding, plan, use, total["dsp"] > 0), closest
        return None, closest

    def run(self, device, margin, dsp, target_fps, progress) -> FitResult:
        allowed = limits(device, margin)
        targets, slowest = self.targets()
        smallest, why = self.attempt(device, allowed, dsp, slowest)
        if smallest is None:  # not even the longest interval's (smallest) design fits
            raise _NoFit(device, why[0], why[1], smallest=why[2])
        if target_fps is not None:
            longest = math.floor(device.clock_mhz * 1e6 / target_fps)
            targets = [t for t in targets if t <= longest][-1:]  # the smallest that meets it
            found = self.attempt(device, allowed, dsp, targets[0])[0] if targets else None
            if found is None:
                raise _NoFit(device, "", 0.0, target_fps, self.run(device, margin, dsp, None, None))
            binding = f"the smallest folding that reaches {target_fps:,.0f} images/s"
            return self._result(device, margin, dsp, allowed, found, binding, target_fps)
        # Bisect for the shortest interval that fits (fitting grows with the interval), then
        # try a few shorter ones still, in case the cheapest choices are not monotone.
        lo, hi = 0, len(targets) - 1
        results: dict[int, Any] = {}

        def tried(index: int):
            if index not in results:
                if progress:
                    progress(f"fit {device.key}: trying {targets[index]:,} cycles per image")
                results[index] = self.attempt(device, allowed, dsp, targets[index])
            return results[index]

        if targets[hi] != slowest:
            targets.append(slowest)
            hi += 1
        results[hi] = (smallest, why)
        while lo < hi:
            mid = (lo + hi) // 2
            if tried(mid)[0] is not None:
                hi = mid
            else:
                lo = mid + 1
        best = lo
        for index in range(lo - 1, max(-1, lo - 1 - SHORTER_TRIES), -1):
            if tried(index)[0] is not None:
                best = index
        if best == 0:
            binding = self.fastest_bound()
        else:
            binding = f"{tried(best - 1)[1][0]} at the next faster folding"
        return self._result(device, margin, dsp, allowed, tried(best)[0], binding, None)

    def fastest_bound(self) -> str:
        """Why no folding is faster than the fastest, which fits: the layer that sets it."""
        fastest = [min(o.cycles for o in layer) for layer in self.options]
        index = max(range(len(fastest)), key=lambda k: fastest[k])
        layer = self.model.weighted_layers()[index]
        why = (
            "its sliding window reads one pixel per cycle"
            if isinstance(layer, ConvLayer)
            else "fully parallel, within the generator's limits"
        )
        return (
            f"no resource: layer {index} ({layer.token()}) takes at least {fastest[index]:,} "
            f"cycles per image ({why})"
        )

    def _result(self, device, margin, dsp, allowed, found, binding, target_fps) -> FitResult:
        folding, plan, use, in_dsp = found
        return FitResult(
            device=device,
            design=self.unit.kind,
            folding=list(folding),
            # Exact: a CNN's from its cycle model (the search went by predicted_interval).
            interval=plan.initiation_interval,
            clock_mhz=device.clock_mhz,
            usage=use,
            limits=allowed,
            margin=margin,
            binding=binding,
            multipliers_in_dsp=in_dsp,
            target_fps=target_fps,
            plan=plan,
        )

    def smallest_device(self, margin: float) -> str | None:
        """The device of the table with the fewest LUTs that some folding fits."""
        _, slowest = self.targets()
        for device in sorted(DEVICE_TABLE, key=lambda d: (d.lut, d.bram)):
            allowed = limits(device, margin)
            if any(
                self.attempt(device, allowed, dsp, slowest)[0] for dsp in _flows(self.unit, device)
            ):
                return device.key
        return None


def _design_total(plan, device: Device, dsp: bool, coefficients: dict[str, Any]) -> dict:
    from bchw.estimate.analytic import design_counts

    return resources(design_counts(plan), device.family, dsp, coefficients)["total"]
