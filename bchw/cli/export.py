"""``bchw export``: a checkpoint to an integer model file (:func:`bchw.core.export`)."""

from __future__ import annotations

import argparse

from bchw.cli.common import (
    EPILOG,
    add_data_options,
    add_json,
    checkpoint_dataset,
    emit_json,
    int_list,
    layer_lines,
    layer_summaries,
    positive_int,
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
    parser.add_argument(
        "--act-bits",
        type=int,
        default=defaults.act_bits,
        help="bits of hidden activations, unsigned after ReLU (default: %(default)s)",
    )
    parser.add_argument(
        "--out-bits", type=int, help="bits of the signed output scores (default: --act-bits)"
    )
    parser.add_argument(
        "--input-bits",
        type=int,
        default=defaults.input_bits,
        help="bits of the unsigned input pixels (default: %(default)s)",
    )
    parser.add_argument(
        "--scale-terms",
        "-K",
        type=int,
        default=defaults.scale_terms,
        help="signed powers of two per neuron scale (default: %(default)s)",
    )
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

    from bchw.core import intmodel
    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.export import export_checkpoint
    from bchw.outputs import check_output_file

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
    if args.frac_bits is not None and args.dataset is None:
        # Formats are given: calibration is skipped, so the data set need not be loaded.
        calibration = np.zeros((1, checkpoint.model.network.input_features), dtype=np.uint8)
    else:
        dataset = checkpoint_dataset(args, checkpoint, args.checkpoint)
        calibration = dataset.train.images
    model = export_checkpoint(checkpoint, calibration, options)
    digest = intmodel.save(model, output)
    print(f"integer model {output} (sha256 {digest})")
    for line in layer_lines(model):
        print(line)
    emit_json(
        args,
        {
            "model": str(output),
            "sha256": digest,
            "arch": model.arch(),
            "layers": layer_summaries(model),
        },
    )
    return 0
