"""The analytical model's error on convolutional designs, against Yosys.

``python benchmarks/cnn_estimate_error.py [--targets ecp5 ice40] [--work DIR]``

The analytical model's per-primitive costs were fitted on MLP designs
(``bchw/estimate/calibration.py``); the sliding window and the pooling add blocks of their own
(``bchw.estimate.analytic.window_counts``, ``pool_counts``). Each design below, a random CNN
from ``bchw random`` at a fixed folding, is generated as the binary design and its 8-bit MAC
baseline and synthesized by Yosys with the family's default flow (DSP blocks allowed); printed
per design and family: Yosys's and the analytical model's LUTs, flip-flops and block RAMs, and
the relative error of each, then the mean absolute error per family. docs/estimates.md records
the output. Runs are cached by content under ``--work``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bchw.core.synthetic import random_network
from bchw.estimate.analytic import design_counts, load_coefficients, resources
from bchw.estimate.synth import synthesize
from rtl_gen.baseline import mac_model
from rtl_gen.conv_plan import plan_conv_design
from rtl_gen.generate import generate_cached
from rtl_gen.plan import DotProduct, LayerFolding

# arch, folding (pe, simd) per convolution and dense layer: kernels 1, 3 and 5, padding or
# none, pooling, engines folded and unrolled, every flatten.
DESIGNS = [
    ("1x12x12-8C3-MP2-8C3-MP2-16-10", [(4, 9), (4, 24), (4, 8), (10, 16)]),
    ("3x16x16-16C3-MP2-16C3-MP2-32-10", [(8, 27), (8, 48), (8, 16), (5, 32)]),
    ("2x10x10-8C5p0-MP2-12C1-24-10", [(8, 10), (6, 8), (4, 12), (10, 24)]),
    ("1x14x14-16C3-MP2-16C3p0-MP2-10", [(16, 9), (8, 16), (2, 64)]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--targets", nargs="+", default=["ecp5", "ice40"])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "bchw-cnn-error"))
    args = parser.parse_args()
    work = Path(args.work)
    coefficients = load_coefficients()
    errors: dict[str, dict[str, list[float]]] = {t: {"lut": [], "ff": []} for t in args.targets}
    print("| design | kind | family | LUT Yosys | LUT model | error | FF Yosys | FF model | "
          "error | BRAM Yosys | BRAM model |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for number, (arch, pairs) in enumerate(DESIGNS):
        binary = random_network(arch, seed=number, act_bits=8)
        folding = [LayerFolding(pe, simd) for pe, simd in pairs]
        plans = {
            "binary": plan_conv_design(binary, folding, 2),
            "mac": plan_conv_design(mac_model(binary), folding, 2, DotProduct.mac(8)),
        }
        for kind, plan in plans.items():
            design, _ = generate_cached(plan, work / f"d{number}-{kind}")
            parts = design_counts(plan)
            for target in args.targets:
                yosys = synthesize(design.verilog, design.manifest.top, target, True, work)
                model = resources(parts, target, True, coefficients)["total"]
                row = [arch, kind, target]
                for key in ("lut", "ff"):
                    error = (model[key] - yosys[key]) / yosys[key]
                    errors[target][key].append(abs(error))
                    row += [f"{yosys[key]:,}", f"{model[key]:,}", f"{100 * error:+.0f} %"]
                row += [str(yosys["bram"]), str(model["bram"])]
                print("| " + " | ".join(row) + " |", flush=True)
    for target, by_key in errors.items():
        mean = {k: 100 * sum(v) / len(v) for k, v in by_key.items()}
        print(f"{target}: mean absolute error LUT {mean['lut']:.0f} %, FF {mean['ff']:.0f} %")


if __name__ == "__main__":
    main()
