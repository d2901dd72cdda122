"""A convolutional network in hardware: sliding windows and layer engines for the
convolutions, max pooling, then the dense layers, then argmax.

Each convolution is a :class:`~rtl_gen.window.SlidingWindow` feeding the folded
:class:`~rtl_gen.layer_engine.LayerEngine` of the convolution seen as a dense layer over one
window (PE over output channels, SIMD over the window); the engine computes one output pixel
per window, ``ceil(C_out / PE)`` beats of PE channels, and a :class:`VectorBuffer` gathers them
into a whole pixel for the next window or pooling unit. Pixels travel whole (all channels in
one beat), in raster order, image after image. Before the first dense layer a vector buffer
re-beats the flattened feature map (row by row, channels innermost: the integer model's order)
into the engine's SIMD beats. The dense layers are linked as in the MLP's :class:`Network`.

The stages and their order are the plan's (:mod:`rtl_gen.conv_plan`); so are the latency and
the initiation interval, from the cycle model.
"""

from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.argmax import argmax_block
from rtl_gen.buffers import BeatFIFO, VectorBuffer
from rtl_gen.conv_plan import ArgmaxStage, ConvDesignPlan, PoolStage, WindowStage
from rtl_gen.layer_engine import LayerEngine
from rtl_gen.plan import FifoLink, LayerPlan, VectorBufferLink
from rtl_gen.window import MaxPool, SlidingWindow


class ConvNetwork(wiring.Component):
    """A whole convolutional integer model, built as its
    :class:`~rtl_gen.conv_plan.ConvDesignPlan` says: pixels in, class index and scores out.

    Ports
    -----
    i : stream of one input pixel (``C`` values) per beat, raster order, image after image.
    o : stream of ``{"index", "scores"}``, one beat per image.
    """

    def __init__(self, plan: ConvDesignPlan) -> None:
        self.plan = plan
        model = plan.model
        self.chain: list[wiring.Component] = []
        previous: LayerEngine | None = None
        shape = unsigned(model.input_bits)  # of the values the stream carries now
        lanes = model.input_shape[0]
        for stage in plan.stages:
            if isinstance(stage, WindowStage):
                block = SlidingWindow(
                    stage.channels, stage.height, stage.width, stage.kernel, stage.padding,
                    stage.bits, stage.simd,
                )  # fmt: skip
            elif isinstance(stage, PoolStage):
                block = MaxPool(stage.channels, stage.height, stage.width, stage.size, stage.bits)
            elif isinstance(stage, LayerPlan):
                block = previous = LayerEngine(stage)
                shape, lanes = previous.output_shape, previous.pe
            elif isinstance(stage, FifoLink):
                block = BeatFIFO(data.ArrayLayout(shape, stage.lanes), stage.depth)
            elif isinstance(stage, VectorBufferLink):
                block = VectorBuffer(stage.n, shape, stage.in_lanes, stage.out_lanes)
                lanes = stage.out_lanes
            else:
                assert isinstance(stage, ArgmaxStage) and previous is not None
                block = self.argmax = argmax_block(
                    stage.classes, shape, stage.scan, plan.pipeline_every
                )
                assert block.latency == stage.latency
            self.chain.append(block)
        assert lanes == model.num_classes
        self.engines = [block for block in self.chain if isinstance(block, LayerEngine)]
        self.windows = [block for block in self.chain if isinstance(block, SlidingWindow)]
        # A deliberate bug for the cosimulation self-check (rtl_gen/faults.py): the stream
        # after the first engine loses this beat (counted from 0).
        self.fault_drop_beat: int | None = None
        channels = model.input_shape[0]
        super().__init__(
            {
                "i": In(stream.Signature(data.ArrayLayout(unsigned(model.input_bits), channels))),
                "o": Out(stream.Signature(self.argmax.o.payload.shape())),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        chain = list(self.chain)
        for index, stage in enumerate(chain):
            m.submodules[f"stage{index}_{type(stage).__name__.lower()}"] = stage
        if self.fault_drop_beat is not None:
            from rtl_gen.faults import DropBeat

            first = chain.index(self.engines[0])
            dropper = DropBeat(self.engines[0].o.payload.shape(), self.fault_drop_beat)
            m.submodules.fault_drop_beat = dropper
            chain.insert(first + 1, dropper)
        wiring.connect(m, wiring.flipped(self.i), chain[0].i)
        for a, b in zip(chain, chain[1:], strict=False):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, chain[-1].o, wiring.flipped(self.o))
        return m
