"""The network top: layer engines chained by buffers, then argmax."""

from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl_gen.argmax import argmax_block
from rtl_gen.buffers import BeatFIFO, VectorBuffer
from rtl_gen.layer_engine import LayerEngine
from rtl_gen.plan import DesignPlan, FifoLink, VectorBufferLink


def link_component(link: FifoLink | VectorBufferLink, engine: LayerEngine) -> wiring.Component:
    """The block a link of the plan names, after ``engine``: a FIFO of its beats or a vector
    buffer that re-beats its outputs."""
    if isinstance(link, FifoLink):
        return BeatFIFO(data.ArrayLayout(engine.output_shape, engine.pe), depth=link.depth)
    return VectorBuffer(link.n, engine.output_shape, link.in_lanes, link.out_lanes)


class Network(wiring.Component):
    """A whole integer model in hardware, built as its :class:`~rtl_gen.plan.DesignPlan` says:
    pixels in, class index and scores out.

    Layer ``l`` takes ``simd_l`` inputs per beat and gives ``pe_l`` outputs per beat. Between
    two layers sits a FIFO of one vector plus two beats when ``pe_l == simd_{l+1}`` (the beats
    match), else a double-buffered :class:`VectorBuffer` that re-beats the vector. After the
    last layer a vector buffer gathers all scores into one beat (unless the layer gives them at
    once), and the argmax picks the class (ties to the lowest index): a scan,
    :class:`~rtl_gen.argmax.ScanArgmax`, where the design is folded enough
    (``plan.argmax_scan``), else a tree, :class:`~rtl_gen.argmax.Argmax`. Latency and
    initiation interval are the plan's (``plan.latency``, ``plan.initiation_interval``).

    Ports
    -----
    i : stream of ``simd_0`` unsigned pixels per beat; an image is ``ceil(n_0 / simd_0)`` beats,
        the last padded (padding lanes are ignored).
    o : stream of ``{"index", "scores"}``, one beat per image.
    """

    def __init__(self, plan: DesignPlan) -> None:
        self.plan = plan
        model = plan.model
        self.engines = [LayerEngine(layer) for layer in plan.layers]
        self.links = [
            link_component(link, engine)
            for link, engine in zip(plan.links, self.engines, strict=False)
        ]
        last, collect = self.engines[-1], plan.collector
        self.collector = (
            None
            if collect is None
            else VectorBuffer(collect.n, last.output_shape, collect.in_lanes, collect.out_lanes)
        )
        self.argmax = argmax_block(
            model.num_classes, last.output_shape, plan.argmax_scan, plan.pipeline_every
        )
        assert self.argmax.latency == plan.argmax_latency
        self.input_layout = data.ArrayLayout(unsigned(model.input_bits), plan.input_lanes)
        self.output_layout = self.argmax.o.payload.shape()
        # A deliberate bug for the cosimulation self-check (rtl_gen/faults.py): the link after
        # the first layer loses this beat (counted from 0).
        self.fault_drop_beat: int | None = None
        super().__init__(
            {
                "i": In(stream.Signature(self.input_layout)),
                "o": Out(stream.Signature(self.output_layout)),
            }
        )

    def stages(self) -> list[wiring.Component]:
        """Every block from input to output, in order."""
        chain: list[wiring.Component] = []
        for k, engine in enumerate(self.engines):
            chain.append(engine)
            if k < len(self.links):
                chain.append(self.links[k])
        if self.collector is not None:
            chain.append(self.collector)
        chain.append(self.argmax)
        return chain

    def elaborate(self, platform) -> Module:
        m = Module()
        chain = self.stages()
        for index, stage in enumerate(chain):
            m.submodules[self._stage_name(stage, index)] = stage
        wiring.connect(m, wiring.flipped(self.i), chain[0].i)
        if self.fault_drop_beat is not None:
            from rtl_gen.faults import DropBeat

            dropper = DropBeat(chain[0].o.payload.shape(), self.fault_drop_beat)
            m.submodules.fault_drop_beat = dropper
            chain = [chain[0], dropper, *chain[1:]]
        for a, b in zip(chain, chain[1:], strict=False):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, chain[-1].o, wiring.flipped(self.o))
        return m

    def _stage_name(self, stage: wiring.Component, index: int) -> str:
        if isinstance(stage, LayerEngine):
            return f"layer{self.engines.index(stage)}"
        if stage is self.collector:
            return "collector"
        if stage is self.argmax:
            return "argmax"
        return f"link{self.links.index(stage)}"
