"""Synthesize, place and route the binary design alone (no MAC baseline), as ``bchw estimate``
does it: for models whose MAC baseline takes too long to synthesize (the shipped MNIST model).

``python benchmarks/binary_pnr.py MODEL --pe 4,8,4,1 --simd 8,4,8,4 [--target ecp5] [--device 85k]``

Generates the binary design, synthesizes it with DSP blocks allowed (the family's default
flow), then synthesizes it inside ``bchw estimate``'s seven-pin shell and places and routes it
with nextpnr; prints both results as JSON. Cached by content under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bchw.core import intmodel
from bchw.estimate import synth
from bchw.estimate.pnr import DEVICES, place_and_route_design
from bchw.estimate.run import images_per_second
from rtl_gen import DEFAULT_PIPELINE_EVERY
from rtl_gen.generate import generate
from rtl_gen.plan import folding_from_lists, plan_design


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--pe", required=True, help="comma-separated, one per layer")
    parser.add_argument("--simd", required=True, help="comma-separated, one per layer")
    parser.add_argument("--target", default="ecp5", choices=sorted(DEVICES))
    parser.add_argument("--device", help="device name (default: the target's default)")
    parser.add_argument("--work", default="build/binary-pnr")
    parser.add_argument(
        "--pipeline-every", type=int, default=DEFAULT_PIPELINE_EVERY, help="as bchw generate's"
    )
    args = parser.parse_args()
    model = intmodel.load(args.model)
    folding = folding_from_lists(
        model, [int(v) for v in args.pe.split(",")], [int(v) for v in args.simd.split(",")]
    )
    work = Path(args.work)
    design = generate(plan_design(model, folding, args.pipeline_every), work / "design")
    manifest = design.manifest
    start = time.monotonic()
    plain = synth.synthesize(design.verilog, manifest.top, args.target, True, work)
    print(json.dumps({"synthesis": {k: plain[k] for k in synth.RESOURCES}}), flush=True)
    placed = place_and_route_design(design.verilog, manifest, args.target, args.device, work)
    interval = manifest.initiation_interval_cycles
    placed["images_per_second"] = images_per_second(placed["fmax_mhz"], interval)
    placed["seconds_total"] = round(time.monotonic() - start, 1)
    print(json.dumps({"place_and_route": placed}), flush=True)


if __name__ == "__main__":
    main()
