"""``bchw eval``: an integer model's accuracy with the bit-exact reference (and the float
model's beside it), per-layer saturation, and dumps (:func:`bchw.core.evaluate.evaluate`)."""

from __future__ import annotations

import argparse

from bchw.cli.common import (
    EPILOG,
    Progress,
    add_data_options,
    add_json,
    add_model_argument,
    emit_json,
    load_model,
    model_dataset,
    positive_int,
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
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
    add_model_argument(parser)
    add_data_options(parser, default=None)
    parser.add_argument(
        "--split",
        choices=("test", "validation", "train"),
        default="test",
        help="which split (default: %(default)s)",
    )
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="only the first N images of the split"
    )
    parser.add_argument(
        "--checkpoint", metavar="FILE", help="also evaluate this float checkpoint for comparison"
    )
    parser.add_argument(
        "--dump", metavar="FILE", help="write scores and predicted classes of every image (.npz)"
    )
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bchw.core.evaluate import evaluate, write_dump
    from bchw.outputs import check_output_file

    if args.dump:
        check_output_file(args.dump)
    model = load_model(args.model)
    dataset = model_dataset(args, model)
    split = dataset.split(args.split).head(args.limit)
    checkpoint = None
    if args.checkpoint:
        from bchw.core.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.checkpoint)
    with Progress() as progress:
        report, result = evaluate(
            model,
            split,
            dataset=dataset.name,
            split_name=args.split,
            checkpoint=checkpoint,
            progress=lambda done, total: progress.update("eval", done, total, "img"),
        )
    if args.dump:
        write_dump(args.dump, model, result, split.labels)
    print(f"model     {args.model} (sha256 {model.sha256[:16]}...), {model.arch()}")
    print(f"data      {dataset.name} {args.split} split, {report.images} images")
    print(
        f"integer   accuracy {report.accuracy:.4f} ({report.correct}/{report.images}), "
        f"{report.seconds:.3f} s"
    )
    for mode, accuracy in report.float_accuracy.items():
        print(f"float     accuracy {accuracy:.4f} ({mode} weights)")
    for index, (sat, layer) in enumerate(zip(report.saturation, model.layers, strict=True)):
        if layer.kind == "maxpool":  # pooling picks a value; it never saturates
            continue
        share = 100 * sat.total / sat.outputs if sat.outputs else 0.0
        print(
            f"layer {index:<3} saturated {sat.total} of {sat.outputs} outputs ({share:.3f} %)"
            f"{'' if model.is_mlp else ', ' + layer.token()}"
        )
    if args.dump:
        print(f"dump      {args.dump}")
    emit_json(args, report.to_json())
    return 0
