"""Fit the analytical model's per-primitive costs to Yosys, and measure its error.

``python benchmarks/fit_estimates.py [--results build/calibration/results.jsonl]``

Refits the families that have runs in the results; the others keep their earlier fit.

Reads the synthesis runs written by ``benchmarks/calibrate_estimates.py``. Per family it picks
the block-RAM thresholds that best reproduce Yosys's memory mapping, then fits the cost of each
primitive (LUTs, flip-flops and carry cells per adder bit, per multiplexer bit, ...) by
non-negative least squares on relative error, using only the designs of role "fit". The error
is then measured on the designs of role "check", which the fit never saw, and both go to
``bchw/estimate/coefficients.json`` (the error is also printed as the Markdown table of
docs/estimates.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import nnls  # scipy comes with scikit-learn

from bchw.estimate.analytic import (
    COEFFICIENTS_PATH,
    GEOMETRY,
    design_counts,
    features,
    map_memories,
)
from bchw.estimate.calibration import CALIBRATION_DESIGNS, calibration_plans

# Which primitives each resource may cost, per flow ("dsp": multipliers on DSP blocks).
TERMS = {
    "lut": {
        "nodsp": ["tree", "leaf", "add", "gate", "mux", "mul", "cmul", "rom", "ram", "one"],
        "dsp": ["tree", "leaf", "add", "gate", "mux", "cmul", "rom", "ram", "one", "n_mul"],
    },
    # One flip-flop model for both flows: Yosys keeps the product registers out of the DSP
    # blocks on these families (the FF counts of the two runs agree).
    "ff": {
        "both": ["reg", "preg", "ram", "mem_reg", "one"],
        "binary": ["reg", "ram", "mem_reg", "one"],
    },
    # Designs without multipliers apart: in the MAC designs' runs the trees' carry chains and
    # flip-flops sit beside the multipliers' (which Yosys merges with the first tree levels),
    # and a fit over both halves the binary trees' carry cells on large designs.
    "carry": {
        "nodsp": ["tree", "add", "mul", "cmul"],
        "dsp": ["tree", "add", "cmul"],
        "binary": ["tree", "ftree", "add"],
    },
}
THRESHOLD_BITS = [0, 32, 64, 96, 128, 192, 256, 384, 512, 1024]
# Thresholds measured on bare memories instead of fitted (the calibration designs' RAMs do not
# tell them apart): Yosys puts an ECP5 RAM in block RAM from 49 words deep (more than three
# 16-word LUT-RAM banks) when it holds more than 1,024 bits per block (48 x 128 and 128 x 8 stay
# in LUT RAM; 56 x 128, 64 x 64 and 192 x 8 go to block RAM). Checked against Yosys by
# tests/estimate/test_analytic.py::test_ram_mapping_is_yosys.
MEASURED_THRESHOLDS = {
    "ecp5": {"min_ram_depth": 49, "min_bits_per_block": 1025},
    # 7-series RAMs by cost (bchw.estimate.analytic._lutram_costs_more), measured on 21 shapes.
    "xc7": {"ram_choice_costs": {"lutram_bit": 8 / 7, "bank_mux_bit": 3.0, "bram_unit": 128.5}},
}
THRESHOLD_DEPTH = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128]


def load_rows(path: Path) -> list[dict]:
    specs = {spec["name"]: spec for spec in CALIBRATION_DESIGNS}
    parts_cache = {}
    rows = []
    for line in path.read_text().splitlines():
        run = json.loads(line)
        spec = specs[run["name"]]
        # Runs written before the field existed synthesized XOR-leaf trees.
        tree = run.get("adder_tree", "xor")
        key = (run["name"], run["kind"], tree)
        if key not in parts_cache:
            parts_cache[key] = design_counts(calibration_plans(spec, tree)[run["kind"]])
        # A binary design has no multiplier: its one run stands for both flows, and for the
        # costs of designs without multipliers ("binary").
        modes = (
            ["dsp", "nodsp", "binary"]
            if run["kind"] == "binary"
            else ["dsp" if run["dsp_allowed"] else "nodsp"]
        )
        for mode in modes:
            rows.append(run | {"mode": mode, "parts": parts_cache[key]})
    return rows


def total_features(parts: list[dict], family: dict) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for part in parts:
        for key, value in features(part, family).items():
            out[key] += value
    return out


def memory_totals(parts: list[dict], family: dict) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for part in parts:
        for key, value in map_memories(part["memories"], family).items():
            out[key] += value
    return out


def dsp_count(parts: list[dict], min_width: int) -> int:
    return sum(
        p["n_mul"] + sum(n for w, n in p["cmul_widths"].items() if int(w) >= min_width)
        for p in parts
    )


def fit_family(name: str, rows: list[dict]) -> dict:
    family = dict(GEOMETRY[name])
    fit_rows = [r for r in rows if r["role"] == "fit"]
    lutram = bool(family["lutram_shapes"])
    best = None
    for rom_depth in THRESHOLD_DEPTH:
        for ram_depth in THRESHOLD_DEPTH:
            for bits in THRESHOLD_BITS:
                trial = family | {
                    "min_rom_depth": rom_depth,
                    "min_ram_depth": ram_depth,
                    "min_bits_per_block": bits,
                }
                cost = 0.0
                for r in fit_rows:
                    mem = memory_totals(r["parts"], trial)
                    cost += abs(mem["bram"] - r["bram"]) + 0.25 * abs(mem["lutram"] - r["lutram"])
                # On a tie, where the family has LUT RAM, the higher thresholds: a memory that
                # no fitted design put in block RAM is not sent there on the evidence of none.
                # Without LUT RAM (iCE40) the alternative is registers and multiplexers, which
                # Yosys avoids for all but tiny memories: the lower thresholds.
                if best is None or (cost <= best[0] if lutram else cost < best[0]):
                    best = (cost, rom_depth, ram_depth, bits)
    family.update(min_rom_depth=best[1], min_ram_depth=best[2], min_bits_per_block=best[3])
    family.update(MEASURED_THRESHOLDS.get(name, {}))
    # Constant multipliers go to DSP blocks from a product width up (Yosys's mul2dsp limits).
    dsp_rows = [r for r in fit_rows if r["mode"] == "dsp" and r["kind"] == "mac"]
    family["dsp_min_width"] = min(
        range(2, 40),
        key=lambda w: sum(abs(dsp_count(r["parts"], w) - r["dsp"]) for r in dsp_rows),
    )
    # Where the DSP blocks absorb the product registers (7-series: MREG), the two flows'
    # flip-flop counts differ: fit them apart.
    macs = {(r["name"], r["mode"]): r["ff"] for r in rows if r["kind"] == "mac"}
    same_ff = all(macs.get((n, "dsp")) == macs.get((n, "nodsp")) for n, _ in macs)
    terms_by_resource = dict(TERMS)
    if not same_ff:
        terms_by_resource["ff"] = {
            "nodsp": TERMS["ff"]["both"],
            "dsp": [*TERMS["ff"]["both"], "n_mul"],
        }
    for resource, modes in terms_by_resource.items():
        family[resource] = {}
        for mode, terms in modes.items():
            # The DSP flow's costs come from the MAC runs: a design without multipliers is
            # estimated with the LUT-only costs whatever the flow (analytic.resources).
            chosen = [
                r
                for r in fit_rows
                if (mode == r["mode"] or mode == "both" and r["mode"] != "binary")
                and r[resource] > 0
                and (mode != "dsp" or r["kind"] == "mac")
            ]
            a = np.array([[total_features(r["parts"], family)[t] for t in terms] for r in chosen])
            # LUTs the model counts as they are (a shallow ROM in logic) are not fitted.
            fixed = [
                total_features(r["parts"], family)["rom_lut"] if resource == "lut" else 0.0
                for r in chosen
            ]
            y = np.array([r[resource] - f for r, f in zip(chosen, fixed, strict=True)])
            weights, _ = nnls(a / y[:, None], np.ones(len(y)))
            fitted = {t: round(float(w), 4) for t, w in zip(terms, weights, strict=True) if w > 0}
            for flow in ("dsp", "nodsp") if mode == "both" else (mode,):
                family[resource][flow] = fitted
    return family


def errors(rows: list[dict], coefficients: dict) -> dict:
    from bchw.estimate.analytic import resources

    out: dict = {}
    for family in coefficients["families"]:
        for role in ("fit", "check"):
            found: dict[str, list[float]] = defaultdict(list)
            for r in rows:
                if r["family"] != family or r["role"] != role:
                    continue
                if r["kind"] == "binary" and r["mode"] != "binary":
                    continue  # the same run as its "binary" row
                est = resources(r["parts"], family, r["mode"] == "dsp", coefficients)["total"]
                for resource in ("lut", "ff", "carry", "bram", "dsp"):
                    truth = r[resource]
                    if truth == 0 and est[resource] == 0:
                        found[resource].append(0.0)
                    elif truth > 0:
                        found[resource].append(abs(est[resource] - truth) / truth)
                    else:
                        found[resource].append(1.0)
            out.setdefault(family, {})[role] = {
                resource: {
                    "median": round(statistics.median(values), 4),
                    "worst": round(max(values), 4),
                    "runs": len(values),
                }
                for resource, values in found.items()
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default="build/calibration/results.jsonl")
    parser.add_argument("--out", default=str(COEFFICIENTS_PATH))
    args = parser.parse_args()
    rows = load_rows(Path(args.results))
    families = sorted({r["family"] for r in rows}, key=list(GEOMETRY).index)
    # Families without runs in the results keep their earlier fit (and its designs and error).
    out_path = Path(args.out)
    earlier = json.loads(out_path.read_text()) if out_path.is_file() else {}
    coefficients = {
        "format": "bchw-analytic-coefficients",
        "yosys": sorted({r["script"].split()[0] for r in rows} | set(earlier.get("yosys", []))),
        "designs": dict(earlier.get("designs", {})),
        "families": dict(earlier.get("families", {})),
        "error": dict(earlier.get("error", {})),
    }
    for name in families:
        mine = [r for r in rows if r["family"] == name]
        coefficients["families"][name] = fit_family(name, mine)
        coefficients["designs"][name] = {
            role: sorted({r["name"] for r in mine if r["role"] == role})
            for role in ("fit", "check")
        }
    fresh = errors(rows, {"families": {n: coefficients["families"][n] for n in families}})
    coefficients["error"].update(fresh)
    Path(args.out).write_text(json.dumps(coefficients, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    print("| family | resource | median (check) | worst (check) | median (fit) | worst (fit) |")
    print("|---|---|---:|---:|---:|---:|")
    for family, by_role in fresh.items():
        for resource, check in by_role["check"].items():
            fit = by_role["fit"][resource]
            print(
                f"| {family} | {resource} | {100 * check['median']:.1f} % | "
                f"{100 * check['worst']:.1f} % | {100 * fit['median']:.1f} % | "
                f"{100 * fit['worst']:.1f} % |"
            )


if __name__ == "__main__":
    main()
