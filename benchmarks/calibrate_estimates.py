"""Synthesize a set of small designs with Yosys, to fit and to check the analytical model.

``python benchmarks/calibrate_estimates.py [--families ice40,ecp5,xc7,gowin] [--jobs 2]``

Every design is a synthetic model (:mod:`bchw.core.synthetic`) of a different shape, folding and
width, generated as the binary design and as its 8-bit MAC baseline (some 4- and 16-bit).
Designs alternate between the fitting set and the held-out set (``"role"``); the fit uses only
the first, the error in docs/estimates.md is measured only on the second. Results (one JSON
object per synthesis run) go to ``build/calibration/results.jsonl``; Yosys runs are cached by
content under ``build/calibration/synth``, so a rerun only synthesizes what changed.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from bchw.errors import BchwError
from bchw.estimate.calibration import CALIBRATION_DESIGNS, calibration_plans
from bchw.estimate.synth import FAMILIES, synthesize
from rtl_gen import DEFAULT_ADDER_TREE
from rtl_gen.generate import generate
from rtl_gen.manifest import TOP_NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="build/calibration")
    parser.add_argument("--only", help="comma-separated design names")
    args = parser.parse_args()
    out = Path(args.out)
    families = args.families.split(",")
    jobs = []
    for spec in CALIBRATION_DESIGNS:
        if args.only and spec["name"] not in args.only.split(","):
            continue
        for kind, plan in calibration_plans(spec).items():
            design = generate(plan, out / "designs" / spec["name"] / kind)
            for family in families:
                for dsp in (True, False) if kind == "mac" else (True,):
                    jobs.append((spec, kind, family, dsp, design.verilog))
    print(f"{len(jobs)} synthesis runs", flush=True)

    def run(job):
        spec, kind, family, dsp, verilog = job
        start = time.time()
        result = synthesize(verilog, TOP_NAME, family, dsp, out / "synth")
        return {
            "name": spec["name"],
            "role": spec["role"],
            "kind": kind,
            "family": family,
            "dsp_allowed": dsp,
            "adder_tree": DEFAULT_ADDER_TREE,
            "seconds": round(time.time() - start, 1),
        } | {k: v for k, v in result.items() if k != "cells"}

    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        for n, future in enumerate(as_completed(futures), 1):
            try:
                row = future.result()
            except BchwError as exc:  # one failing run must not hide the others
                print(f"[{n}/{len(jobs)}] failed: {exc}", flush=True)
                continue
            results.append(row)
            print(f"[{n}/{len(jobs)}] {json.dumps(row)}", flush=True)
            with (out / "partial.jsonl").open("a") as partial:
                partial.write(json.dumps(row, sort_keys=True) + "\n")
    results.sort(key=lambda r: (r["name"], r["kind"], r["family"], not r["dsp_allowed"]))
    path = out / "results.jsonl"
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in results))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
