"""``bchw train``: a BinaryConnect network from a data set (:func:`bchw.core.train.train`)."""

from __future__ import annotations

import argparse

from bchw.cli.common import EPILOG, add_data_options, add_json, emit_json, positive_int
from bchw.core.options import (
    ARCHIVE_EPOCHS,
    ARCHIVE_HIDDEN,
    BINARIZATIONS,
    DEFAULT_ARCH,
    DEFAULT_EPOCHS,
    LOSSES,
    PAPER_RECIPES,
    TrainConfig,
)


def add_parser(commands) -> None:
    defaults = TrainConfig()
    hidden = "-".join(map(str, ARCHIVE_HIDDEN))
    parser = commands.add_parser(
        "train",
        help="train a BinaryConnect MLP or CNN",
        description=(
            "Train a BinaryConnect MLP or CNN as in Courbariaux et al. (2015): real weights "
            "kept and clipped to [-1, 1], binarized in the forward and backward pass, Glorot "
            "learning-rate scale per binary layer (a convolution's fans count its kernel), "
            "batch norm after every layer (per channel after a convolution), max pooling after "
            "the ReLU, Adam with exponential learning-rate decay. Writes checkpoint.pt (best "
            "validation epoch), train_log.jsonl and learning_curve.png to --out. The same "
            "options give the same checkpoint on the same CPU kind with the same thread count "
            "(float sums are not portable beyond that; the exported integer model is)."
        ),
        epilog=EPILOG,
    )
    add_data_options(parser)
    parser.add_argument(
        "--arch",
        default=defaults.arch,
        help="the network: the input (a size, or CxHxW for images), then layers joined by "
        "'-': N a dense layer, NCk a k x k convolution of N channels (stride 1, size-keeping "
        "padding; NCkpP pads P), MPk max pooling; the class count last. Default: digits "
        f"{DEFAULT_ARCH['digits']}, mnist {DEFAULT_ARCH['mnist']}, cifar10 the paper's "
        f"{DEFAULT_ARCH['cifar10']}, svhn the same with half the convolution widths, an "
        f"archive INPUTS-{hidden}-CLASSES. A CNN on mnist: 1x28x28-32C3-MP2-64C3-MP2-512-10",
    )
    parser.add_argument(
        "--binarization",
        choices=BINARIZATIONS,
        default=defaults.binarization,
        help="sign, hard-sigmoid sampling, or float weights for a baseline (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        help=f"epochs (default: digits {DEFAULT_EPOCHS['digits']}, mnist "
        f"{DEFAULT_EPOCHS['mnist']}, cifar10 {DEFAULT_EPOCHS['cifar10']}, svhn "
        f"{DEFAULT_EPOCHS['svhn']}, an archive {ARCHIVE_EPOCHS})",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"minibatch size (default: {defaults.batch_size}; {_paper('batch_size')})",
    )
    parser.add_argument(
        "--lr-start",
        type=float,
        help=f"learning rate of the first epoch (default: {defaults.lr_start}; "
        f"{_paper('lr_start')})",
    )
    parser.add_argument(
        "--lr-end",
        type=float,
        help="learning rate the exponential decay reaches after the last epoch "
        f"(default: {defaults.lr_end}; {_paper('lr_end')})",
    )
    parser.add_argument(
        "--loss",
        choices=LOSSES,
        default=defaults.loss,
        help="loss (default: %(default)s, on one-hot targets in {-1, +1})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed for initialisation, shuffling and sampling (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="PyTorch CPU threads (default: the faster of 1 and every core, measured on a few "
        "steps of this model; one thread wins beside another job). Give it to reproduce a "
        "checkpoint bit for bit: the thread count changes the float sums",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where to train: cpu, cuda or cuda:N (default: %(default)s). The same seed gives "
        "the same initial weights and batches on any device, but a GPU orders its sums "
        "differently (and samples stochastic weights from its own random stream), so its "
        "model is not the CPU's bit for bit",
    )
    parser.add_argument(
        "--bn-momentum",
        type=float,
        help="batch-norm running-average momentum (default: "
        f"{defaults.bn_momentum}; {_paper('bn_momentum')})",
    )
    parser.add_argument(
        "--bn-eps",
        type=float,
        default=defaults.bn_eps,
        help="batch-norm epsilon (default: %(default)s)",
    )
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    add_json(parser)
    parser.set_defaults(handler=run)


def _paper(name: str) -> str:
    """The paper's value of an option for cifar10 and svhn, for --help."""
    return ", ".join(f"{dataset} {values[name]}" for dataset, values in PAPER_RECIPES.items())


def run(args: argparse.Namespace) -> int:
    from bchw.core.data import load_dataset
    from bchw.core.train import device_description, resolve_device, train

    recipe = {**vars(TrainConfig()), **PAPER_RECIPES.get(args.dataset, {})}
    given = lambda name: recipe[name] if getattr(args, name) is None else getattr(args, name)  # noqa: E731
    config = TrainConfig(
        dataset=args.dataset,
        arch=args.arch,
        binarization=args.binarization,
        epochs=args.epochs or 0,
        batch_size=given("batch_size"),
        lr_start=given("lr_start"),
        lr_end=given("lr_end"),
        loss=args.loss,
        seed=args.seed,
        bn_momentum=given("bn_momentum"),
        bn_eps=args.bn_eps,
        threads=args.threads or 0,
    )
    device = resolve_device(args.device)
    dataset = load_dataset(args.dataset, args.data_dir)
    config.check(dataset)
    epochs = config.resolved_epochs()
    print(
        f"training {config.resolved_arch(dataset)} ({config.binarization}) on {dataset.name}: "
        f"{len(dataset.train)} train, {len(dataset.validation)} validation, "
        f"{len(dataset.test)} test images, {epochs} epoch{'s' if epochs > 1 else ''}, on "
        f"{device_description(device)}",
        flush=True,
    )
    result = train(config, dataset, args.out, progress=not args.quiet, device=args.device)
    if device.type == "cpu":
        print(f"threads   {result.threads.describe()}")
    print(
        f"best epoch {result.best_epoch}: validation error "
        f"{100 * result.validation_error:.2f} %, test error {100 * result.test_error:.2f} % "
        f"({result.seconds_per_epoch:.2f} s per epoch)"
    )
    print(f"checkpoint    {result.checkpoint}")
    print(f"training log  {result.log}")
    print(f"learning curve {result.curve}")
    emit_json(
        args,
        {
            "best_epoch": result.best_epoch,
            "validation_error": result.validation_error,
            "test_error": result.test_error,
            "test_error_binary": result.test_error_binary,
            "seconds_per_epoch": result.seconds_per_epoch,
            "device": device_description(device),
            "threads": result.config.threads,
            "checkpoint": str(result.checkpoint),
            "log": str(result.log),
            "curve": str(result.curve),
        },
    )
    return 0
