"""The analytical model's error on binary designs built with each ``--adder-tree``.

``python benchmarks/relative_tree_error.py [--families xc7] [--work build/calibration-v5]``

The coefficients (``bchw/estimate/coefficients.json``) are fitted on XOR-leaf designs; this
rebuilds the calibration designs (``CALIBRATION_DESIGNS``) with each tree, synthesizes their
binary designs (DSP flow; a binary design has no multiplier) and prints, per design and tree,
Yosys's LUTs and flip-flops beside the model's and the error, then the median and worst per
tree. Runs are cached by content under ``WORK/synth``: pointed at a calibration folder, the
XOR runs are the calibration's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bchw.estimate.analytic import design_counts, load_coefficients
from bchw.estimate.calibration import CALIBRATION_DESIGNS, calibration_design
from bchw.estimate.run import _analytic
from bchw.estimate.synth import synthesize
from rtl_gen import ADDER_TREES
from rtl_gen.generate import generate
from rtl_gen.manifest import TOP_NAME, VERILOG_NAME
from rtl_gen.plan import DotProduct, plan_design


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", default="xc7")
    parser.add_argument("--work", default="build/calibration")
    args = parser.parse_args()
    coefficients = load_coefficients()
    errors: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in CALIBRATION_DESIGNS:
            model, folding = calibration_design(spec)
            pipe = spec.get("pipe", 2)
            for tree in ADDER_TREES:
                out = Path(tmp) / spec["name"] / tree
                plan = plan_design(model, folding, pipe, DotProduct.binary(tree))
                generate(plan, out)
                parts = design_counts(plan)
                for family in args.families.split(","):
                    got = synthesize(
                        out / VERILOG_NAME,
                        TOP_NAME,
                        family,
                        True,
                        Path(args.work) / "synth",
                    )
                    want = _analytic(parts, family, coefficients)["total"]
                    row = {"name": spec["name"], "role": spec["role"], "tree": tree}
                    row["family"] = family
                    for key in ("lut", "ff"):
                        error = 100 * (want[key] - got[key]) / got[key]
                        row |= {key: got[key], f"{key}_model": want[key]}
                        row[f"{key}_error_pct"] = round(error, 1)
                        errors.setdefault((tree, family, key), []).append(abs(error))
                    print(json.dumps(row), flush=True)
    for (tree, family, key), values in errors.items():
        print(
            f"{tree:8} {family:6} {key:3} median {statistics.median(values):.1f} % "
            f"worst {max(values):.1f} %"
        )


if __name__ == "__main__":
    main()
