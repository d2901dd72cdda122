"""``bchw random``: an integer model of any architecture with random weights and constants
(:func:`bchw.core.synthetic.random_network`), to size and verify hardware before training."""

from __future__ import annotations

import argparse

from bchw.cli.common import (
    add_json,
    add_width_options,
    save_and_describe,
    width_options,
)


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "random",
        help="write an integer model of any architecture with random weights",
        description=(
            "Write a valid integer model of the architecture ARCH with random +1/-1 weights "
            "and requantization constants set from the accumulators random pixels give (so "
            "that activations spread over their range, as a trained model's do). Its accuracy "
            "means nothing; its arithmetic is as exact as a trained model's, so eval, generate, "
            "cosim and estimate size and verify hardware before any training (generate, cosim "
            "and estimate take MLPs so far). The same arguments give the same file."
        ),
        epilog=(
            "ARCH: the input (CxHxW for images, or a number of features), then layers joined "
            "by '-': NCk a convolution of N channels with a k x k kernel (k odd, stride 1, "
            "padding that keeps the size; NCkpP pads P), MPk max pooling, N a dense layer; the "
            "class count last. Examples: 784-1024-1024-1024-10, "
            "1x28x28-32C3-MP2-64C3-MP2-512-10, "
            "3x32x32-128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-MP2-1024-1024-10. Errors print "
            "one line and exit with status 2 (set BCHW_DEBUG=1 for a traceback)."
        ),
    )
    parser.add_argument("arch", metavar="ARCH", help="the architecture (see below)")
    parser.add_argument(
        "--output", "-o", required=True, metavar="FILE", help="integer model file to write"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_width_options(parser)
    add_json(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from bchw import __version__
    from bchw.core.arch import parse_network
    from bchw.core.synthetic import random_network
    from bchw.outputs import check_output_file

    output = check_output_file(args.output)
    network = parse_network(args.arch)
    options = width_options(args)
    options.check(1)
    provenance = {
        "bchw_version": __version__,
        "arch": network.text(),
        "random": {
            "seed": args.seed,
            "input_bits": options.input_bits,
            "act_bits": options.act_bits,
            "out_bits": options.output_bits,
            "scale_terms": options.scale_terms,
        },
    }
    model = random_network(
        network.text(),
        seed=args.seed,
        input_bits=options.input_bits,
        act_bits=options.act_bits,
        out_bits=options.output_bits,
        scale_terms=options.scale_terms,
        provenance=provenance,
    )
    save_and_describe(args, model, output, "random integer model")
    return 0
