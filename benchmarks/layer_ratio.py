"""LUTs of whole layer engines: each binary layer against the same layer of the MAC baseline.

``python benchmarks/layer_ratio.py MODEL --pe 8,8,1 --simd 16,16,16 [--families ...]
[--adder-tree pair|xor|relative]``

A layer engine is everything one layer of a generated design holds: the issue stage and its
counters, the input buffer, the weight memory (block RAM in both designs), the dot-product unit,
the accumulators, the constants memory and the time-shared requantizers. Each engine of the
model at the given folding is generated on its own, as the binary design and as its 8-bit MAC
baseline (``rtl_gen.mac``), and synthesized LUT only (no DSP blocks) per family. What the
network adds around the layers (the links between them, the argmax, the output collector) is
left out, as it is the same in both designs. Printed per layer and family: binary and MAC
LUTs, their ratio, and the ratio of LUTs including those inside carry cells (ECP5's CCU2C
holds two LUT4s, Gowin's ALU one; iCE40 and 7-series carry cells sit beside counted LUTs).
``--adder-tree`` picks the binary layers' tree (``rtl_gen.ADDER_TREES``; the MAC
baseline has none). Runs are cached by content under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from amaranth.back import verilog

from bchw.core import intmodel
from bchw.estimate.synth import FAMILIES, family, synthesize
from rtl_gen import ADDER_TREES, DEFAULT_ADDER_TREE, DEFAULT_PIPELINE_EVERY
from rtl_gen.baseline import mac_model
from rtl_gen.layer_engine import LayerEngine
from rtl_gen.plan import DotProduct, folding_from_lists, plan_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--pe", required=True, help="comma-separated, one per layer")
    parser.add_argument("--simd", required=True, help="comma-separated, one per layer")
    parser.add_argument("--weight-bits", type=int, default=8)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--layers", help="comma-separated layer indices (default: all)")
    parser.add_argument("--adder-tree", choices=ADDER_TREES, default=DEFAULT_ADDER_TREE)
    parser.add_argument("--work", default="build/layer-ratio")
    args = parser.parse_args()
    model = intmodel.load(args.model)
    folding = folding_from_lists(
        model, [int(v) for v in args.pe.split(",")], [int(v) for v in args.simd.split(",")]
    )
    mac = mac_model(model, args.weight_bits)
    weighted = model.weighted_layers()
    chosen = [int(k) for k in args.layers.split(",")] if args.layers else range(len(weighted))
    work = Path(args.work)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in chosen:
            f = folding[index]
            sources = {}
            units = {
                "binary": (model, DotProduct.binary(args.adder_tree)),
                "mac": (mac, DotProduct.mac(args.weight_bits)),
            }
            for name, (m, unit) in units.items():
                lay = m.weighted_layers()[index]  # a convolution: its dense layer over a window
                layer = plan_layer(lay, f.pe, f.simd, DEFAULT_PIPELINE_EVERY, unit=unit)
                engine = LayerEngine(layer)
                path = Path(tmp) / f"{name}{index}.v"
                path.write_text(verilog.convert(engine, name=f"{name}{index}", emit_src=False))
                sources[name] = path
            for fam in args.families.split(","):
                b = synthesize(sources["binary"], f"binary{index}", fam, False, work)
                m = synthesize(sources["mac"], f"mac{index}", fam, False, work)
                logic_b = family(fam).luts_with_carry(b["lut"], b["carry"])
                logic_m = family(fam).luts_with_carry(m["lut"], m["carry"])
                row = {
                    "adder_tree": args.adder_tree,
                    "layer": index,
                    "pe": f.pe,
                    "simd": f.simd,
                    "family": fam,
                    "binary_lut": b["lut"],
                    "mac_lut": m["lut"],
                    "ratio": round(m["lut"] / b["lut"], 2),
                    "binary_lut_with_carry": logic_b,
                    "mac_lut_with_carry": logic_m,
                    "ratio_with_carry": round(logic_m / logic_b, 2),
                    "binary_bram": b["bram"],
                    "mac_bram": m["bram"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("| layer | PE/SIMD | family | binary LUTs | MAC LUTs | MAC / binary | with carry LUTs |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['layer']} | {r['pe']}/{r['simd']} | {r['family']} | {r['binary_lut']:,} | "
            f"{r['mac_lut']:,} | {r['ratio']:.1f}x | {r['ratio_with_carry']:.1f}x |"
        )


if __name__ == "__main__":
    main()
