"""Deliberate bugs in generated designs, to show that cosimulation catches them.

A checker that cannot fail proves nothing. ``bchw cosim --self-check`` generates the design once
per fault below, each with exactly one bug, and expects the cosimulation to report every one:

- ``weight-bit``: one weight bit flipped in the weight memory (or constant tree);
- ``rounding-shift``: a requantizer shifts right by ``R + 1`` instead of ``R``;
- ``no-saturation``: a requantizer wraps instead of clamping at the top of its output range;
- ``argmax-ties``: the argmax gives a tie to the highest index instead of the lowest;
- ``dropped-beat``: the link after the first layer loses one beat;

and in a convolutional network, where windows can go wrong in ways a dense layer cannot:

- ``window-shift``: the first convolution's windows read one pixel to the right;
- ``window-padding``: a padded convolution's windows read the padding as all ones, not zeros.

The hooks are attributes of the blocks (``fault_*``), left at their harmless defaults by
:func:`rtl_gen.generate.generate` unless it is given a fault.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.core.intmodel import IntegerModel
from rtl_gen.cnn import ConvNetwork
from rtl_gen.conv_plan import ConvDesignPlan, plan_network
from rtl_gen.network import Network
from rtl_gen.plan import DesignPlan

FAULT_KINDS = ("weight-bit", "rounding-shift", "no-saturation", "argmax-ties", "dropped-beat")
WINDOW_FAULT_KINDS = ("window-shift", "window-padding")  # a CNN's, after FAULT_KINDS


class DropBeat(wiring.Component):
    """Passes a stream through, except beat number ``index`` (from 0), which it takes and loses."""

    def __init__(self, layout, index: int) -> None:
        self.index = index
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform) -> Module:
        m = Module()
        count = Signal(range(self.index + 2))
        dropping = Signal()
        m.d.comb += [
            dropping.eq(count == self.index),
            self.o.payload.eq(self.i.payload),
            self.o.valid.eq(self.i.valid & ~dropping),
            self.i.ready.eq(self.o.ready | dropping),
        ]
        with m.If(self.i.valid & self.i.ready & (count <= self.index)):
            m.d.sync += count.eq(count + 1)
        return m


@dataclass(frozen=True)
class Fault:
    """One bug: its kind, the layer it sits in (an index into the model's layers, pooling
    included) and, for ``weight-bit``, which weight."""

    kind: str
    layer: int = 0
    neuron: int = 0
    input: int = 0
    beat: int = 0

    def describe(self) -> str:
        if self.kind == "weight-bit":
            return (
                f"weight bit flipped: layer {self.layer}, neuron {self.neuron}, input {self.input}"
            )
        if self.kind == "rounding-shift":
            return f"rounding shift off by one: layer {self.layer} shifts by R+1"
        if self.kind == "no-saturation":
            return f"saturation removed: layer {self.layer} wraps above its output range"
        if self.kind == "argmax-ties":
            return "argmax tie rule reversed: ties go to the highest index"
        if self.kind == "dropped-beat":
            return f"dropped beat: the link after layer 0 loses beat {self.beat}"
        if self.kind == "window-shift":
            return f"window shifted: layer {self.layer}'s windows read one pixel to the right"
        if self.kind == "window-padding":
            return f"wrong padding: layer {self.layer}'s windows pad with all ones, not zeros"
        raise ValueError(self.kind)


def flip_weight(model: IntegerModel, layer: int, neuron: int, input_: int) -> IntegerModel:
    """The model with weight ``[neuron, input_]`` of ``layer`` negated."""
    target = model.layers[layer]
    weights = target.weights.copy()
    weights[neuron, input_] = -weights[neuron, input_]
    layers = list(model.layers)
    layers[layer] = dataclasses.replace(target, weights=weights)
    return dataclasses.replace(model, layers=tuple(layers))


def engine_index(model: IntegerModel, layer: int) -> int:
    """Which engine computes ``model.layers[layer]`` (pooling layers have none)."""
    return sum(1 for lay in model.layers[:layer] if lay.kind != "maxpool")


def window_index(model: IntegerModel, layer: int) -> int:
    """Which sliding window feeds the convolution ``model.layers[layer]``."""
    return sum(1 for lay in model.layers[:layer] if lay.kind == "conv")


def _network(plan: DesignPlan | ConvDesignPlan) -> Network | ConvNetwork:
    return ConvNetwork(plan) if isinstance(plan, ConvDesignPlan) else Network(plan)


def faulty_network(plan: DesignPlan | ConvDesignPlan, fault: Fault) -> Network | ConvNetwork:
    """The network of ``plan`` with ``fault`` built in (the manifest still describes ``plan``)."""
    model = plan.model
    if fault.kind == "weight-bit":
        flipped = flip_weight(model, fault.layer, fault.neuron, fault.input)
        return _network(plan_network(flipped, list(plan.folding), plan.pipeline_every, plan.unit))
    net = _network(plan)
    if fault.kind == "rounding-shift":
        net.engines[engine_index(model, fault.layer)].requantizer.fault_shift_error = 1
    elif fault.kind == "no-saturation":
        net.engines[engine_index(model, fault.layer)].requantizer.fault_no_saturation = True
    elif fault.kind == "window-shift":
        net.windows[window_index(model, fault.layer)].fault_shift = 1
    elif fault.kind == "window-padding":
        window = net.windows[window_index(model, fault.layer)]
        window.fault_pad_value = (1 << window.bits) - 1
    elif fault.kind == "argmax-ties":
        net.argmax.fault_ties_to_highest = True
    elif fault.kind == "dropped-beat":
        net.fault_drop_beat = fault.beat
    else:
        raise ValueError(f"unknown fault kind {fault.kind!r}")
    return net
