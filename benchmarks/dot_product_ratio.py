"""LUTs of the dot-product units alone: the binary tree against the MAC tree.

``python benchmarks/dot_product_ratio.py [--lanes 4] [--inputs 16] [--bits 8] [--families ...]``

The binary unit is what a folded layer computes per cycle: ``lanes`` PE lanes, each adding
every input or its ones' complement as its weight bit says (XOR gates, then a pipelined adder
tree; the constant this leaves per neuron is absorbed by the requantizer's offset, outside the
unit). The MAC unit is ``lanes`` dot products of ``inputs`` activations with signed 8-bit
weights (registered products, pipelined tree). Both take their weights as data, as folded
layers do. Each is synthesized LUT only (no DSP blocks) per family (the ratio also with the LUTs
inside ECP5 and Gowin carry cells, which the LUT count leaves out); the ratio isolates the
datapath from what both designs share (requantizers, accumulators, memories, buffers, control).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bchw.estimate.synth import FAMILIES, synthesize
from rtl_gen.adder_tree import AdderTree
from rtl_gen.mac import MultiplyTree


class BinaryDot(wiring.Component):
    def __init__(self, lanes: int, inputs: int, bits: int) -> None:
        self.tree = AdderTree(lanes, inputs, (0, (1 << bits) - 1), None, 2, sign_bits=True)
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
            # ECP5 and Gowin carry cells hold LUTs that the LUT count leaves out.
            logic_b = FAMILIES[family].luts_with_carry(b["lut"], b["carry"])
            logic_m = FAMILIES[family].luts_with_carry(m["lut"], m["carry"])
            rows[family] = {
                "binary_lut": b["lut"],
                "mac_lut": m["lut"],
                "ratio": round(m["lut"] / b["lut"], 2),
                "binary_carry": b["carry"],
                "mac_carry": m["carry"],
                "ratio_with_carry_luts": round(logic_m / logic_b, 2),
            }
            print(family, json.dumps(rows[family]), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
