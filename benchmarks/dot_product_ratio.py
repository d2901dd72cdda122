"""LUTs of the dot-product units alone: the binary tree against the MAC tree.

``python benchmarks/dot_product_ratio.py [--lanes 4] [--inputs 16] [--bits 8] [--families ...]``

The binary unit is what a folded layer computes per cycle: ``lanes`` PE lanes summing the
inputs whose weight bit is set (AND gates, then a pipelined adder tree) plus the lane that sums
all inputs, and per PE the subtraction ``2 * plus - total``. The MAC unit is ``lanes`` dot
products of ``inputs`` activations with signed 8-bit weights (registered products, pipelined
tree). Both take their weights as data, as folded layers do. Each is synthesized LUT only
(no DSP blocks) per family; the ratio isolates the datapath from what both designs share
(requantizers, accumulators, memories, buffers, control).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw.synth import FAMILIES, synthesize
from rtl_gen.adder_tree import AdderTree
from rtl_gen.mac import MultiplyTree


class BinaryDot(wiring.Component):
    def __init__(self, lanes: int, inputs: int, bits: int) -> None:
        self.tree = AdderTree(lanes + 1, inputs, (0, (1 << bits) - 1), None, 2, masked=True)
        width = self.tree.sum_shape.width + 2
        self.lanes = lanes
        super().__init__(
            {
                "i": In(self.tree.i.signature.members["payload"].shape),
                "valid": In(1),
                "o": Out(unsigned(width * lanes)),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.tree = tree = self.tree
        m.d.comb += [tree.i.payload.eq(self.i), tree.i.valid.eq(self.valid), tree.o.ready.eq(1)]
        width = self.tree.sum_shape.width + 2
        outs = []
        for p in range(self.lanes):
            partial = Signal(signed(width), name=f"partial{p}")
            m.d.sync += partial.eq((tree.o.payload.sum[p] << 1) - tree.o.payload.sum[self.lanes])
            outs.append(partial)
        m.d.comb += self.o.eq(Cat(*outs))
        return m


class MacDot(wiring.Component):
    def __init__(self, lanes: int, inputs: int, bits: int, weight_bits: int) -> None:
        self.tree = MultiplyTree(lanes, inputs, (0, (1 << bits) - 1), weight_bits, None, 2)
        super().__init__(
            {
                "i": In(self.tree.i.signature.members["payload"].shape),
                "valid": In(1),
                "o": Out(self.tree.o.signature.members["payload"].shape),
            }
        )

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.tree = tree = self.tree
        m.d.comb += [
            tree.i.payload.eq(self.i),
            tree.i.valid.eq(self.valid),
            tree.o.ready.eq(1),
            self.o.eq(tree.o.payload),
        ]
        return m


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--weight-bits", type=int, default=8)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--work", default="build/dot-product")
    args = parser.parse_args()
    work = Path(args.work)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {}
        for name, unit in (
            ("binary", BinaryDot(args.lanes, args.inputs, args.bits)),
            ("mac", MacDot(args.lanes, args.inputs, args.bits, args.weight_bits)),
        ):
            path = Path(tmp) / f"{name}.v"
            path.write_text(verilog.convert(unit, name=name, emit_src=False))
            sources[name] = path
        for family in args.families.split(","):
            b = synthesize(sources["binary"], "binary", family, False, work)
            m = synthesize(sources["mac"], "mac", family, False, work)
            rows[family] = {
                "binary_lut": b["lut"],
                "mac_lut": m["lut"],
                "ratio": round(m["lut"] / b["lut"], 2),
            }
            print(family, json.dumps(rows[family]), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
