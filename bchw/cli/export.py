"""``bchw export``: a checkpoint to an integer model file (:func:`bchw.core.export`)."""

from __future__ import annotations

import argparse

from bchw.cli.common import (
    EPILOG,
    add_data_options,
    add_json,
    add_width_options,
    checkpoint_dataset,
    int_list,
    positive_int,
    save_and_describe,
    width_options,
)
from bchw.core.options import ExportOptions


def add_parser(commands) -> None:
    defaults = ExportOptions()
    parser = commands.add_parser(
        "export",
        help="turn a checkpoint into an integer model file",
        description=(
            "Export a checkpoint to an integer model: weights as packed bits; bias and batch "
            "norm folded per neuron into a multiplier-free requantization (a sum of at most K "
            "signed powers of two, an offset, rounding, saturation, ReLU on hidden layers); "
            "fixed-point activations whose fractional bits are chosen by calibration on "
            "training images (of the data set the checkpoint was trained on, or --dataset). "
            "The format is in docs/integer-model.md."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("checkpoint", help="checkpoint.pt written by bchw train")
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="FILE",
        help="integer model file to write (conventionally *.bchw)",
    )
    add_width_options(parser)
    parser.add_argument(
        "--frac-bits",
        type=int_list,
        metavar="F[,F...]",
        help="fractional bits of each layer's output, overriding calibration "
        "(one value for all layers, or one per layer)",
    )
    parser.add_argument(
        "--calibration-images",
        type=positive_int,
        default=defaults.calibration_images,
        help="training images used for calibration (default: %(default)s)",
    )
    add_data_options(parser, default=None)
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.export import export_checkpoint
    from bchw.outputs import check_output_file

    output = check_output_file(args.output)
    checkpoint = load_checkpoint(args.checkpoint)
    options = width_options(
        args, frac_bits=args.frac_bits, calibration_images=args.calibration_images
    )
    options.check(len(checkpoint.model.linears))
    if args.frac_bits is not None and args.dataset is None:
        # Formats are given: calibration is skipped, so the data set need not be loaded.
        calibration = np.zeros((1, checkpoint.model.network.input_features), dtype=np.uint8)
    else:
        dataset = checkpoint_dataset(args, checkpoint, args.checkpoint)
        calibration = dataset.train.images
    model = export_checkpoint(checkpoint, calibration, options)
    save_and_describe(args, model, output, "integer model")
    return 0
