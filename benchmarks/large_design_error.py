"""The analytical model against Yosys on designs as large as ``--fit`` chooses, per family.

``python benchmarks/large_design_error.py [--results build/calibration-large/results.jsonl]``

Reads synthesis runs written by ``benchmarks/calibrate_estimates.py`` (for example
``--only c13,c14 --families xc7,gowin,ice40``), prices the same designs with the analytical
model and prints, per run, the relative error of LUTs, flip-flops, carry cells and block RAM,
and of the LUT sites ``--fit`` counts (LUTs with those inside carry cells and LUT RAM,
:func:`bchw.estimate.fit.usage` before packing). Positive: the model predicts more than Yosys
builds. A Markdown table, as docs/estimates.md prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bchw.estimate.analytic import design_counts, load_coefficients, resources
from bchw.estimate.calibration import CALIBRATION_DESIGNS, calibration_plans
from bchw.estimate.fit import LUTRAM_LUTS
from bchw.estimate.synth import family as family_info


def lut_sites(row: dict, family: str) -> float:
    luts = family_info(family).luts_with_carry(row["lut"], row["carry"])
    return luts + LUTRAM_LUTS[family] * row["lutram"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default="build/calibration-large/results.jsonl")
    args = parser.parse_args()
    specs = {spec["name"]: spec for spec in CALIBRATION_DESIGNS}
    coefficients = load_coefficients()
    print("| design | family | LUT (Yosys) | LUT | FF | carry | block RAM | LUT sites |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for line in Path(args.results).read_text().splitlines():
        run = json.loads(line)
        # Runs written before the field existed synthesized XOR-leaf trees.
        plan = calibration_plans(specs[run["name"]], run.get("adder_tree", "xor"))[run["kind"]]
        fam = run["family"]
        model = resources(design_counts(plan), fam, run["dsp_allowed"], coefficients)["total"]

        def error(predicted: float, measured: float) -> str:
            return f"{(predicted - measured) / measured:+.0%}" if measured else "-"

        label = (
            run["kind"]
            if run["kind"] == "binary"
            else ("MAC, DSP blocks" if run["dsp_allowed"] else "MAC in LUTs")
        )
        cells = [error(model[k], run[k]) for k in ("lut", "ff", "carry", "bram")] + [
            error(lut_sites(model, fam), lut_sites(run, fam))
        ]
        print(
            f"| {run['name']} ({run['role']}), {label} | {fam} | {run['lut']:,} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
