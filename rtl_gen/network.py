"""The network top: layer engines chained by buffers, then argmax."""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.core.intmodel import IntegerModel
from rtl_gen.argmax import Argmax
from rtl_gen.buffers import BeatFIFO, VectorBuffer
from rtl_gen.layer_engine import LayerEngine


@dataclass(frozen=True)
class LayerFolding:
    """Neurons (``pe``) and inputs (``simd``) computed per cycle in one layer."""

    pe: int
    simd: int


class Network(wiring.Component):
    """A whole integer model in hardware: pixels in, class index and scores out.

    Layer ``l`` takes ``simd_l`` inputs per beat and gives ``pe_l`` outputs per beat. Between
    two layers sits a FIFO of one vector when ``pe_l == simd_{l+1}`` (the beats match), else a
    double-buffered :class:`VectorBuffer` that re-beats the vector. After the last layer a
    vector buffer gathers all scores into one beat (unless the layer gives them at once), and
    :class:`Argmax` picks the class (ties to the lowest index).

    Ports
    -----
    i : stream of ``simd_0`` unsigned pixels per beat; an image is ``ceil(n_0 / simd_0)`` beats,
        the last padded (padding lanes are ignored).
    o : stream of ``{"index", "scores"}``, one beat per image.
    """

    def __init__(
        self,
        model: IntegerModel,
        folding: list[LayerFolding],
        pipeline_every: int = 2,
        requant_registered: bool = True,
        adder_tree: str = "xor",
    ) -> None:
        if len(folding) != len(model.layers):
            raise ValueError(
                f"folding names {len(folding)} layers, the model has {len(model.layers)}"
            )
        self.model = model
        self.folding = list(folding)
        self.pipeline_every = pipeline_every
        self.adder_tree = adder_tree
        from rtl_gen.mac import MacLayer, MacLayerEngine

        self.engines = [
            MacLayerEngine(layer, f.pe, f.simd, pipeline_every, requant_registered)
            if isinstance(layer, MacLayer)
            else LayerEngine(layer, f.pe, f.simd, pipeline_every, requant_registered, adder_tree)
            for layer, f in zip(model.layers, folding, strict=True)
        ]
        self.links: list[wiring.Component] = []
        for a, b, layer in zip(self.engines, self.engines[1:], model.layers, strict=False):
            if a.pe == b.simd:
                layout = data.ArrayLayout(a.output_shape, a.pe)
                # One vector plus two: a SyncFIFOBuffered this deep sustains a beat per cycle.
                self.links.append(BeatFIFO(layout, depth=a.nf + 2))
            else:
                self.links.append(VectorBuffer(layer.out_features, a.output_shape, a.pe, b.simd))
        last = self.engines[-1]
        classes = model.num_classes
        self.collector = (
            None
            if last.pe == classes
            else VectorBuffer(classes, last.output_shape, last.pe, classes)
        )
        self.argmax = Argmax(classes, last.output_shape, pipeline_every)
        self.input_shape = unsigned(model.input_bits)
        self.input_layout = data.ArrayLayout(self.input_shape, folding[0].simd)
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

    # -- timing ------------------------------------------------------------------------------

    @property
    def input_beats(self) -> int:
        return self.engines[0].sf

    @property
    def initiation_interval(self) -> int:
        """Cycles between images in a full pipeline: the slowest stage's cycles per image."""
        intervals = [engine.cycles_per_vector for engine in self.engines]
        for link, engine in zip(self.links, self.engines, strict=False):
            intervals.append(engine.nf if isinstance(link, BeatFIFO) else link.cycles_per_vector)
        if self.collector is not None:
            intervals.append(self.collector.cycles_per_vector)
        return max(intervals)

    @property
    def latency(self) -> int:
        """Cycles from taking an image's first beat to its result being valid, when the image's
        beats arrive back to back, the pipeline is empty and the output is ready."""
        times = list(range(self.input_beats))
        for stage in self.stages():
            if isinstance(stage, Argmax):
                times = [times[-1] + stage.latency]
            else:
                times = stage.output_times(times)
        return times[-1]

    # -- hardware ------------------------------------------------------------------------------

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
        if isinstance(stage, Argmax):
            return "argmax"
        return f"link{self.links.index(stage)}"
