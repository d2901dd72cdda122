"""The options of training and export, documented field by field, with their defaults.

Plain Python (no PyTorch, no numpy), so that ``bchw --help`` reads every default at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bchw.core.arch import Network, parse_network
from bchw.errors import BchwError

if TYPE_CHECKING:
    from bchw.core.data import Dataset

BUILTIN_DATASETS = ("digits", "mnist", "cifar10", "svhn")
FOLDER_DATASETS = ("cifar10", "svhn")  # read from --data-dir, in their standard formats
DATA_DIR_ENV = "BCHW_DATA_DIR"  # the MNIST folder, when --data-dir is not given
CIFAR10_ARCH = "3x32x32-128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-MP2-1024-1024-10"
SVHN_ARCH = "3x32x32-64C3-64C3-MP2-128C3-128C3-MP2-256C3-256C3-MP2-1024-1024-10"
DEFAULT_ARCH = {
    "digits": "64-256-256-10",
    "mnist": "784-1024-1024-1024-10",
    "cifar10": CIFAR10_ARCH,
    "svhn": SVHN_ARCH,
}
DEFAULT_EPOCHS = {"digits": 100, "mnist": 250, "cifar10": 500, "svhn": 200}
# The paper's CNN recipes (its cifar10.py and svhn.py): what bchw train uses for these data sets
# where an option is not given. Every other data set takes TrainConfig's defaults (its MNIST's).
PAPER_RECIPES = {
    "cifar10": {"batch_size": 50, "lr_start": 3e-3, "lr_end": 2e-6, "bn_momentum": 0.1},
    "svhn": {"batch_size": 50, "lr_start": 1e-2, "lr_end": 3e-6, "bn_momentum": 0.1},
}
# An archive's default: two hidden layers of this many units (its inputs and classes around).
ARCHIVE_HIDDEN = (256, 256)
ARCHIVE_EPOCHS = 100
BINARIZATIONS = ("deterministic", "stochastic", "none")
LOSSES = ("square-hinge", "cross-entropy")

DEFAULT_ACT_BITS = 8
DEFAULT_INPUT_BITS = 8
DEFAULT_SCALE_TERMS = 2
DEFAULT_CALIBRATION_IMAGES = 10_000


def parse_arch(arch: str) -> list[int]:
    """An MLP's ``"784-1024-10"`` -> ``[784, 1024, 10]``: input size, hidden sizes, classes."""
    network = parse_network(arch)
    if not network.is_mlp:
        raise BchwError(f"architecture {arch!r} is not an MLP (sizes joined by '-')")
    return network.sizes()


@dataclass
class TrainConfig:
    """Everything that determines a training run (seeded: the same config gives the same model
    on the same CPU kind with the same thread count; see docs/reproduction.md).

    Attributes
    ----------
    dataset:
        ``digits``, ``mnist`` or the path of an ``.npz`` archive.
    arch:
        Layer sizes joined by ``-``, input to classes; empty for the data set's default.
    binarization:
        ``deterministic`` (sign), ``stochastic`` (hard-sigmoid sampling) or ``none`` (float
        weights, a baseline).
    epochs:
        Epochs; 0 for the data set's default (digits 100, mnist 250, archives 100).
    batch_size, lr_start, lr_end:
        Minibatch size; Adam's learning rate at the first epoch and the one the exponential
        decay reaches after the last.
    loss:
        ``square-hinge`` (the paper's) or ``cross-entropy``.
    seed:
        Initialisation, shuffling and stochastic sampling.
    bn_momentum, bn_eps:
        Batch norm's running-average momentum and epsilon (the paper's code: 0.15, 1e-4).
    threads:
        PyTorch CPU threads; 0 to choose by measuring a few steps with one thread and with
        every core (one thread wins beside another job). Float training is bit for bit only
        at the same thread count.
    """

    dataset: str = "digits"
    arch: str = ""
    binarization: str = "deterministic"
    epochs: int = 0
    batch_size: int = 100
    lr_start: float = 1e-3
    lr_end: float = 3e-6
    loss: str = "square-hinge"
    seed: int = 0
    bn_momentum: float = 0.15
    bn_eps: float = 1e-4
    threads: int = 0

    def resolved_arch(self, dataset: Dataset | None = None) -> str:
        """``arch``, else the data set's default architecture."""
        if self.arch:
            return self.arch
        if self.dataset in DEFAULT_ARCH:
            return DEFAULT_ARCH[self.dataset]
        if dataset is None:
            return ""
        sizes = [dataset.num_features, *ARCHIVE_HIDDEN, dataset.num_classes]
        return "-".join(map(str, sizes))

    def resolved_epochs(self) -> int:
        return self.epochs or DEFAULT_EPOCHS.get(self.dataset, ARCHIVE_EPOCHS)

    def check(self, dataset: Dataset) -> Network:
        """Validate against the data set; return the parsed architecture."""
        if self.binarization not in BINARIZATIONS:
            raise BchwError(
                f"unknown binarization {self.binarization!r}: use {', '.join(BINARIZATIONS)}"
            )
        if self.loss not in LOSSES:
            raise BchwError(f"unknown loss {self.loss!r}: use {', '.join(LOSSES)}")
        if self.epochs < 0:
            raise BchwError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise BchwError(f"batch size must be at least 2 (batch norm), got {self.batch_size}")
        if self.threads < 0:
            raise BchwError(f"threads must be 1 or more (0: measure), got {self.threads}")
        for name in ("lr_start", "lr_end"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise BchwError(f"{name.replace('_', '-')} must be a positive number, got {value}")
        if not (0 < self.bn_momentum <= 1 and self.bn_eps > 0):
            raise BchwError("batch-norm momentum must lie in (0, 1] and epsilon be positive")
        arch = self.resolved_arch(dataset)
        network = parse_network(arch)
        dataset.check_input(network.input_shape, f"architecture {arch}")
        if network.num_classes != dataset.num_classes:
            raise BchwError(
                f"architecture {arch} ends in {network.num_classes} outputs but {dataset.name} "
                f"has {dataset.num_classes} classes"
            )
        return network


@dataclass(frozen=True)
class ExportOptions:
    """Choices the user makes at export time.

    Attributes
    ----------
    act_bits:
        Bits of the hidden activations (unsigned, after ReLU).
    out_bits:
        Bits of the signed output scores (None: ``act_bits``).
    scale_terms:
        Signed powers of two per neuron scale (K).
    frac_bits:
        Fractional bits of each layer's output (one value for all, or one per layer),
        overriding calibration; None to calibrate.
    calibration_images:
        Training images the calibration runs the float model on.
    input_bits:
        Bits of the unsigned input pixels.
    """

    act_bits: int = DEFAULT_ACT_BITS
    out_bits: int | None = None
    scale_terms: int = DEFAULT_SCALE_TERMS
    frac_bits: tuple[int, ...] | None = None
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES
    input_bits: int = DEFAULT_INPUT_BITS

    def check(self, n_layers: int) -> None:
        from bchw.core.intmodel import (
            MAX_HIDDEN_BITS,
            MAX_INPUT_BITS,
            MAX_OUTPUT_BITS,
            MAX_SCALE_TERMS,
        )

        if not 1 <= self.act_bits <= MAX_HIDDEN_BITS:
            raise BchwError(
                f"activation bits must lie in 1..{MAX_HIDDEN_BITS}, got {self.act_bits}"
            )
        if not 2 <= self.output_bits <= MAX_OUTPUT_BITS:
            raise BchwError(f"output bits must lie in 2..{MAX_OUTPUT_BITS}, got {self.output_bits}")
        if not 1 <= self.scale_terms <= MAX_SCALE_TERMS:
            raise BchwError(
                f"scale terms K must lie in 1..{MAX_SCALE_TERMS}, got {self.scale_terms}"
            )
        if self.frac_bits is not None and len(self.frac_bits) not in (1, n_layers):
            raise BchwError(
                f"--frac-bits gives {len(self.frac_bits)} values; give 1 or one per layer "
                f"({n_layers})"
            )
        if self.frac_bits is not None and any(abs(f) > 32 for f in self.frac_bits):
            raise BchwError("fractional bits must lie in -32..32")
        if not 1 <= self.input_bits <= MAX_INPUT_BITS:
            raise BchwError(f"input bits must lie in 1..{MAX_INPUT_BITS}, got {self.input_bits}")
        if self.calibration_images < 1:
            raise BchwError("calibration needs at least 1 image")

    @property
    def output_bits(self) -> int:
        return self.out_bits if self.out_bits is not None else self.act_bits
