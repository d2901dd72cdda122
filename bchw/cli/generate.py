"""``bchw generate``: Verilog and its manifest for an integer model (:mod:`rtl_gen.generate`)."""

from __future__ import annotations

import argparse

from bchw.cli.common import (
    FOLDING_EPILOG,
    add_folding_options,
    add_json,
    add_model_argument,
    check_output_dir,
    emit_json,
    load_model,
    plan_from_args,
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "generate",
        help="Verilog for an integer model (multiplier-free datapath)",
        description=(
            "Generate one self-contained Verilog-2005 file (bchw_network.v) and manifest.json "
            "for an integer model, an MLP or a CNN. Each layer computes PE neurons over SIMD "
            "inputs per cycle: PE = out_features and SIMD = in_features unrolls it into constant "
            "add/subtract trees; anything less folds it (weight bits in block RAM, one "
            "accumulator per PE). A convolution is a dense layer over each k x k x C window "
            "(PE over output channels, SIMD over the window), fed by a sliding window with line "
            "buffers; max pooling streams. Streams are valid/ready: an MLP takes SIMD of layer "
            "0 pixels per beat, a CNN one pixel (all channels) per beat; the class index and "
            "all scores come out. The manifest gives ports, payload packing, folding, latency "
            "and initiation interval in cycles (a CNN's from an exact cycle model). The same "
            "inputs give byte-identical files. "
            "Architecture and integration: docs/hardware.md."
        ),
        epilog=FOLDING_EPILOG,
    )
    add_model_argument(parser)
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="DIR",
        help="folder for bchw_network.v and manifest.json",
    )
    add_folding_options(parser)
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rtl_gen.generate import generate
    from rtl_gen.plan import folding_text

    output = check_output_dir(args.output)
    model = load_model(args.model)
    plan = plan_from_args(args, model)
    print(f"generating {model.arch()}: {folding_text(plan.folding)}", flush=True)
    design = generate(plan, output)
    manifest = design.manifest
    print(f"verilog   {design.verilog} (top module {manifest.top})")
    print(f"manifest  {design.manifest_path}")
    print(
        f"timing    {manifest.initiation_interval_cycles} cycles per image, "
        f"latency {manifest.latency_cycles} cycles"
    )
    emit_json(
        args,
        {
            "verilog": str(design.verilog),
            "manifest": str(design.manifest_path),
            "top": manifest.top,
            "latency_cycles": manifest.latency_cycles,
            "initiation_interval_cycles": manifest.initiation_interval_cycles,
            "folding": [{"pe": f.pe, "simd": f.simd} for f in plan.folding],
        }
        | _fit_summary(args, manifest.initiation_interval_cycles),
    )
    return 0


def _fit_summary(args: argparse.Namespace, interval: int) -> dict:
    """With --fit: the search's result, at the design's exact interval (a CNN's from the
    cycle model; the search predicts it from the slowest stage)."""
    result = getattr(args, "fit_result", None)
    if result is None:
        return {}
    summary = result.as_dict()
    summary.update(
        initiation_interval_cycles=interval,
        images_per_second=round(result.clock_mhz * 1e6 / interval),
    )
    return {"fit": summary}
