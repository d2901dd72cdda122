"""``bchw sweep-bits``: integer accuracy against activation bits and scale terms
(:func:`bchw.core.precision.sweep_bits`)."""

from __future__ import annotations

import argparse

from bchw.cli.common import (
    EPILOG,
    Progress,
    add_data_options,
    add_jobs,
    add_json,
    add_scheduler,
    check_output_dir,
    checkpoint_dataset,
    emit_json,
    int_range,
    positive_int,
)
from bchw.errors import BchwError


def add_parser(commands) -> None:
    parser = commands.add_parser(
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
            "would keep. The pairs run --jobs at a time in local processes, or on a Dask cluster "
            "with --scheduler; each is kept in --output/points as it finishes, so an "
            "interrupted sweep resumes where it stopped."
        ),
        epilog=EPILOG,
    )
    parser.add_argument("checkpoint", help="checkpoint.pt written by bchw train")
    parser.add_argument(
        "--bits",
        type=int_range,
        default=None,
        metavar="B[,B...]|LO-HI",
        help="activation widths, a list or a range (default: 4-12)",
    )
    parser.add_argument(
        "--scale-terms",
        "-K",
        type=int_range,
        default=None,
        metavar="K[,K...]",
        help="scale terms per neuron (default: 1,2,3)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="split to measure on (default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="only the first N images of the split"
    )
    add_data_options(parser, default=None)
    add_jobs(parser, "models exported and evaluated")
    add_scheduler(parser)
    parser.add_argument(
        "--output",
        "-o",
        default="build/sweep-bits",
        metavar="DIR",
        help="folder for precision.md, precision.json and precision.png (default: %(default)s)",
    )
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bchw.core.checkpoint import load_checkpoint
    from bchw.core.evaluate import float_accuracies
    from bchw.core.precision import (
        DEFAULT_BITS,
        DEFAULT_TERMS,
        check_grid,
        markdown_table,
        sweep_bits,
        write_report,
    )
    from bchw.jobs import Runner
    from bchw.outputs import make_output_dir

    bits = args.bits or DEFAULT_BITS
    terms = args.scale_terms or DEFAULT_TERMS
    check_grid(bits, terms)
    if Path(args.checkpoint).suffix == ".bchw":
        raise BchwError(
            f"{args.checkpoint} is an integer model; sweep-bits exports again from the float "
            "checkpoint (checkpoint.pt from bchw train)"
        )
    output = check_output_dir(args.output)
    checkpoint = load_checkpoint(args.checkpoint)
    dataset = checkpoint_dataset(args, checkpoint, args.checkpoint)
    split = dataset.split(args.split).head(args.limit)
    make_output_dir(output)  # after every check: a refusal leaves no folder
    arch = checkpoint.model.arch
    print(
        f"sweep     {arch} ({dataset.name}, {checkpoint.model.binarization}): "
        f"{len(set(bits))} widths x {len(set(terms))} K on {len(split)} {args.split} images",
        flush=True,
    )
    with Progress() as progress:

        def tell(done: int, total: int, message: str) -> None:
            progress.update("sweep", done, total, "model", message)

        points = sweep_bits(
            checkpoint,
            dataset.train.images,
            split,
            bits,
            terms,
            progress=tell,
            runner=Runner(args.jobs, args.scheduler),
            cache_dir=output / "points",
        )
    float_accuracy = float_accuracies(None, checkpoint, split)["binary"]
    print(markdown_table(points, float_accuracy), end="")
    summary = {
        "checkpoint_sha256": checkpoint.sha256,
        "arch": arch,
        "dataset": dataset.name,
        "split": args.split,
        "images": len(split),
        "float_accuracy": float_accuracy,
        "points": [p.to_json() for p in points],
    }
    title = f"{arch} ({dataset.name}): error against activation bits"
    paths = write_report(points, float_accuracy, output, title, summary)
    print(f"report    {paths['markdown']}, {paths['json']}")
    print(f"plot      {paths['plot']}")
    emit_json(args, summary)
    return 0
