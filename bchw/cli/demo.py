"""``bchw demo``: the whole chain on a shipped model (:func:`bchw.demo.run_demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bchw.cli.common import (
    EPILOG,
    Progress,
    add_data_options,
    add_jobs,
    add_json,
    emit_json,
    positive_int,
)
from bchw.demo import DEFAULT_LIMIT, DEMO_SYNAPSES_PER_CYCLE, DemoOptions
from sim.options import SIMULATORS


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="the whole hardware chain on a shipped model, and a reproducibility report",
        description=(
            "Run the whole hardware chain on the shipped integer model of --dataset (the "
            "portable artefact): check the model file, measure its accuracy with the bit-exact "
            "reference, generate its Verilog, cosimulate the test images bit for bit against "
            "the reference, and estimate the binary design against its 8-bit "
            "multiply-accumulate baseline for ECP5 (Yosys for digits; the analytical model "
            "for larger models, unless --synth; bchw estimate takes other families). The "
            "hardware uses a small "
            f"folding (about {DEMO_SYNAPSES_PER_CYCLE} synapses per cycle) so that synthesis "
            "takes about a minute; bchw generate, cosim and estimate take any folding. Then, "
            "for digits, train the model again from its recipe and report whether the result "
            "is identical to the shipped one and, if not, how it differs (float training is "
            "bit for bit only on the same CPU kind and thread count). Exit status 1 if a "
            "cosimulation output differs from the reference; a retrained model that differs "
            "is reported, not an error."
        ),
        epilog=EPILOG,
    )
    add_data_options(parser)
    parser.add_argument(
        "--model",
        metavar="NAME|FILE",
        help="the integer model: digits or mnist for a shipped one, or a .bchw file "
        "(default: the shipped model of --dataset; an archive needs one)",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        metavar="N",
        help=f"cosimulate only the first N test images (default: digits all, others "
        f"{DEFAULT_LIMIT})",
    )
    resources = parser.add_mutually_exclusive_group()
    resources.add_argument(
        "--analytic",
        dest="synth",
        action="store_false",
        default=None,
        help="resources from the analytical model instead of Yosys (instant; the default but "
        "for digits)",
    )
    resources.add_argument(
        "--synth",
        dest="synth",
        action="store_true",
        help="resources from Yosys (the default for digits; MNIST's designs take Yosys well "
        "over 15 minutes)",
    )
    parser.add_argument(
        "--no-reproduce",
        dest="reproduce",
        action="store_false",
        help="skip training the digits model again from its recipe",
    )
    parser.add_argument(
        "--sim", choices=SIMULATORS, help="simulator (default: $SIM, else verilator)"
    )
    add_jobs(parser)
    parser.add_argument(
        "--output",
        "-o",
        default="build/demo",
        metavar="DIR",
        help="folder for the Verilog, cosimulation, report and retrained model "
        "(default: %(default)s)",
    )
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bchw.demo import run_demo, summary_table

    options = DemoOptions(
        dataset=args.dataset,
        model=args.model,
        data_dir=args.data_dir,
        output=Path(args.output),
        limit=args.limit,
        synth=args.synth,
        reproduce=args.reproduce,
        jobs=args.jobs,
        sim=args.sim,
    )
    with Progress() as progress:
        result = run_demo(options, progress.say, progress.runs(), progress.images())
    print()
    print(summary_table(result.summary))
    seconds = result.summary["seconds"]
    stages = ", ".join(
        f"{name} {value:.0f} s" for name, value in seconds.items() if name != "total"
    )
    print(f"done in {seconds['total']:.0f} s ({stages})")
    emit_json(args, result.summary)
    return 0 if result.ok else 1
