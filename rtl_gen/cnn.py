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

Not yet in the plan, the manifest, generate, cosim or estimate: this top is simulated in
amaranth.sim by the tests, bit-exact against the reference.
"""

from __future__ import annotations

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from bchw.core.intmodel import ConvLayer, IntegerModel, MaxPoolLayer
from bchw.errors import BchwError
from rtl_gen import DEFAULT_PIPELINE_EVERY
from rtl_gen.argmax import Argmax
from rtl_gen.buffers import VectorBuffer
from rtl_gen.layer_engine import LayerEngine
from rtl_gen.network import link_component
from rtl_gen.plan import LayerFolding, link_between, plan_layer
from rtl_gen.window import MaxPool, SlidingWindow


class ConvNetwork(wiring.Component):
    """A whole convolutional integer model: pixels in, class index and scores out.

    ``folding`` gives ``(pe, simd)`` for each convolution and dense layer, in order (pooling
    has none). A convolution's SIMD is over its window of ``k * k * C`` values.

    Ports
    -----
    i : stream of one input pixel (``C`` values) per beat, raster order, image after image.
    o : stream of ``{"index", "scores"}``, one beat per image.
    """

    def __init__(
        self,
        model: IntegerModel,
        folding: list[LayerFolding],
        pipeline_every: int = DEFAULT_PIPELINE_EVERY,
    ) -> None:
        if len(model.input_shape) != 3 or model.layers[0].kind == "dense":
            raise BchwError("ConvNetwork takes a model that starts with convolution or pooling")
        weighted = model.weighted_layers()
        if len(folding) != len(weighted):
            raise BchwError(
                f"the folding names {len(folding)} layers; the model has {len(weighted)} "
                "convolution and dense layers"
            )
        self.model = model
        self.chain: list[wiring.Component] = []
        folds = iter(folding)
        spatial = True  # the stream carries whole pixels
        previous_engine: LayerEngine | None = None
        c, h, w = model.input_shape
        bits = model.input_bits
        for layer in model.layers:
            if isinstance(layer, MaxPoolLayer):
                self.chain.append(MaxPool(c, h, w, layer.size, bits))
                h, w = layer.out_height, layer.out_width
                continue
            f = next(folds)
            try:
                plan = plan_layer(layer, f.pe, f.simd, pipeline_every)
            except ValueError as exc:
                raise BchwError(f"layer {layer.token()}: {exc}") from None
            engine = LayerEngine(plan)
            if isinstance(layer, ConvLayer):
                self.chain.append(SlidingWindow(c, h, w, layer.kernel, layer.padding, bits, f.simd))
                self.chain.append(engine)
                if f.pe != layer.out_channels:  # gather the output beats into one pixel
                    self.chain.append(
                        VectorBuffer(
                            layer.out_channels, engine.output_shape, f.pe, layer.out_channels
                        )  # fmt: skip
                    )
                c, h, w = layer.out_channels, layer.out_height, layer.out_width
            else:
                if spatial:  # flatten: the feature map's pixels into SIMD beats
                    self.chain.append(VectorBuffer(c * h * w, unsigned(bits), c, f.simd))
                    spatial = False
                elif previous_engine is not None:
                    link = link_between(previous_engine.plan, plan)
                    self.chain.append(link_component(link, previous_engine))
                self.chain.append(engine)
                previous_engine = engine
            bits = layer.output_bits
        last = previous_engine
        assert last is not None
        classes = model.num_classes
        if last.pe != classes:
            self.chain.append(VectorBuffer(classes, last.output_shape, last.pe, classes))
        self.argmax = Argmax(classes, last.output_shape, pipeline_every)
        self.chain.append(self.argmax)
        c0 = model.input_shape[0]
        super().__init__(
            {
                "i": In(stream.Signature(data.ArrayLayout(unsigned(model.input_bits), c0))),
                "o": Out(stream.Signature(self.argmax.o.payload.shape())),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        for index, stage in enumerate(self.chain):
            m.submodules[f"stage{index}_{type(stage).__name__.lower()}"] = stage
        wiring.connect(m, wiring.flipped(self.i), self.chain[0].i)
        for a, b in zip(self.chain, self.chain[1:], strict=False):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, self.chain[-1].o, wiring.flipped(self.o))
        return m
