"""BinaryConnect layers and the MLP, after Courbariaux, Bengio and David (NeurIPS 2015).

The real-valued weights are kept and trained; the forward and backward passes use their
binarization. The gradient with respect to the binary weights is applied to the real weights
unchanged (straight-through), and the real weights are clipped to [-1, 1] after every step.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from bchw.core import options
from bchw.core.arch import Conv, Dense, Network, Pool, parse_network
from bchw.core.options import BINARIZATIONS
from bchw.errors import BchwError

Binarization = Literal["deterministic", "stochastic", "none"]
TestWeights = Literal["binary", "real"]

# (-H, +H) are the two binary values; the paper and its MNIST code use H = 1.
H = 1.0


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """``clip((x + 1) / 2, 0, 1)``: the probability that a weight binarizes to +1."""
    return torch.clamp((x + 1.0) / 2.0, 0.0, 1.0)


def binarize_deterministic(w: torch.Tensor) -> torch.Tensor:
    """+H where ``w >= 0`` else -H (the original rounds p = 0.5 up, so 0 maps to +H).

    Computed as ``copysign(H, w + 0.0)``: ``-0.0 + 0.0`` is ``+0.0``, so zeros of either sign give
    +H, exactly ``where(w >= 0, H, -H)`` for finite ``w``, at a quarter of its cost.
    """
    return torch.full_like(w, H).copysign_(w + 0.0)


def binarize_stochastic(w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """+H with probability ``hard_sigmoid(w / H)``, else -H.

    +H exactly where ``u < p`` for ``u ~ U[0, 1)``: ``u - p`` is negative there and +0.0 or
    positive elsewhere (floating-point subtraction keeps the sign), so ``-copysign(H, u - p)``.
    """
    # hard_sigmoid(w / H) = clamp(w / (2H) + 1/2, 0, 1) in three in-place passes; bit for bit
    # the same because H is a power of two (scaling by it is exact).
    p = w.mul(0.5 / H).add_(0.5).clamp_(0.0, 1.0)
    u = torch.rand(w.shape, generator=generator, dtype=w.dtype, device=w.device)
    return torch.full_like(w, H).copysign_(u.sub_(p)).neg_()


class _StraightThrough(torch.autograd.Function):
    """Binarize in the forward pass; pass the gradient to the real weights unchanged.

    The usual ``w + (wb - w).detach()`` makes four full-size temporaries per layer and step, and
    its value is exactly ``wb`` only when ``wb`` has the sign of ``w`` (always, deterministic;
    not always, stochastic, where it can be one rounding step off). This gives exactly ``wb``
    and the same gradient, and BinaryConnect trains almost as fast as a float MLP
    (docs/reproduction.md, "Training speed").
    """

    @staticmethod
    def forward(ctx, w, stochastic: bool, generator):
        del ctx
        return binarize_stochastic(w, generator) if stochastic else binarize_deterministic(w)

    @staticmethod
    def backward(ctx, grad):
        del ctx
        return grad, None, None


class _BinaryWeights:
    """What a binary dense layer and a binary convolution share: the binarized effective
    weight, the Glorot learning-rate scale and the clipping. ``fan_in`` and ``fan_out`` count
    the kernel for a convolution (inputs and outputs per output position), as the paper's
    code does."""

    weight: nn.Parameter
    binarization: Binarization
    test_weights: TestWeights
    generator: torch.Generator | None
    training: bool

    def _init_binary(self, binarization: Binarization) -> None:
        if binarization not in BINARIZATIONS:
            raise BchwError(f"unknown binarization {binarization!r}")
        self.binarization = binarization
        self.test_weights = "binary" if binarization != "none" else "real"
        self.generator = None
        with torch.no_grad():
            if binarization != "none":
                self.weight.uniform_(-H, H)
            self.bias.zero_()  # type: ignore[attr-defined]

    @property
    def is_binary(self) -> bool:
        return self.binarization != "none"

    @property
    def fans(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def lr_scale(self) -> float:
        """Glorot learning-rate scale ``1 / sqrt(1.5 / (fan_in + fan_out))`` for binary weights."""
        if not self.is_binary:
            return 1.0
        return 1.0 / math.sqrt(1.5 / sum(self.fans))

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        if not self.is_binary:
            return w
        if not self.training and self.test_weights == "real":
            return w
        stochastic = self.training and self.binarization == "stochastic"
        return _StraightThrough.apply(w, stochastic, self.generator)

    def clip_(self) -> None:
        """Clip the real weights to [-H, H] (after every optimizer step)."""
        if self.is_binary:
            with torch.no_grad():
                self.weight.clamp_(-H, H)

    def binary_rows(self) -> torch.Tensor:
        """The deterministic binary weights, one row per output unit, inputs in the integer
        model's order (for a convolution: kernel row, kernel column, then channel)."""
        w = binarize_deterministic(self.weight.detach())
        if w.dim() == 4:  # [out, C, k, k] -> [out, k, k, C]
            w = w.permute(0, 2, 3, 1)
        return w.reshape(w.shape[0], -1)


class BinaryLinear(_BinaryWeights, nn.Linear):
    """A dense layer whose weights are binarized in the forward pass (straight-through).

    Parameters
    ----------
    in_features, out_features:
        Layer size.
    binarization:
        ``"deterministic"`` (sign), ``"stochastic"`` (hard-sigmoid sampling) or ``"none"``
        (a plain float layer, for baselines).

    The real weights start uniform in [-H, H]. ``test_weights`` selects what evaluation uses:
    ``"binary"`` (the sign of the real weights; what the hardware computes) or ``"real"`` (the
    paper's test-time choice for stochastic BinaryConnect).
    """

    def __init__(self, in_features: int, out_features: int, binarization: Binarization) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=True)
        self._init_binary(binarization)

    @property
    def fans(self) -> tuple[int, int]:
        return self.in_features, self.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, binarization={self.binarization}"


class BinaryConv2d(_BinaryWeights, nn.Conv2d):
    """A convolution (stride 1, zero padding) whose weights are binarized like BinaryLinear's."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, padding: int,
        binarization: Binarization,
    ) -> None:  # fmt: skip
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel, padding=padding, bias=True)
        self._init_binary(binarization)

    @property
    def fans(self) -> tuple[int, int]:
        window = self.kernel_size[0] * self.kernel_size[1]
        return self.in_channels * window, self.out_channels * window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, binarization={self.binarization}"


class BinaryConnectNet(nn.Module):
    """A BinaryConnect network from an architecture (:mod:`bchw.core.arch`).

    Every convolution and dense layer is followed by batch norm (per channel, per unit); ReLU
    follows all but the output layer; max pooling comes after the ReLU, so the integer model
    pools requantized activations exactly as the float model pools real ones. The output layer
    is binary and batch-normalized too, as in the paper. Batch norm follows the original code's
    constants: momentum (alpha) 0.15 and epsilon 1e-4 by default.

    Inputs are flat vectors; an image is flattened row by row with its channels innermost
    (``H x W x C``), the integer model's order, and the first dense layer after convolutions
    sees the feature map flattened the same way. ``linears`` and ``norms`` hold the weighted
    layers and their batch norms in order (the names of the MLP's checkpoints, kept).
    """

    def __init__(
        self,
        arch: Network | list[int] | str,
        binarization: Binarization = "deterministic",
        bn_momentum: float = 0.15,
        bn_eps: float = 1e-4,
    ) -> None:
        super().__init__()
        if isinstance(arch, list):
            arch = "-".join(map(str, arch))
        self.network = parse_network(arch) if isinstance(arch, str) else arch
        self.binarization = binarization
        linears: list[nn.Module] = []
        norms: list[nn.Module] = []
        self._stages: list[tuple[str, int]] = []  # ("weighted", index) or ("pool", size)
        for layer, shape in zip(self.network.layers, self.network.shapes(), strict=False):
            if isinstance(layer, Pool):
                self._stages.append(("pool", layer.size))
                continue
            if isinstance(layer, Conv):
                linears.append(
                    BinaryConv2d(
                        shape[0], layer.out_channels, layer.kernel, layer.padding, binarization
                    )  # fmt: skip
                )
                norms.append(nn.BatchNorm2d(layer.out_channels, eps=bn_eps, momentum=bn_momentum))
            else:
                n_in = math.prod(shape)
                linears.append(BinaryLinear(n_in, layer.units, binarization))
                norms.append(nn.BatchNorm1d(layer.units, eps=bn_eps, momentum=bn_momentum))
            self._stages.append(("weighted", len(linears) - 1))
        self.linears = nn.ModuleList(linears)
        self.norms = nn.ModuleList(norms)

    @property
    def sizes(self) -> list[int]:
        """An MLP's layer sizes (input first)."""
        return self.network.sizes()

    @property
    def arch(self) -> str:
        return self.network.text()

    def stage_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every weighted layer (after ReLU on hidden layers, before pooling),
        each flattened to ``[N, H*W*C]`` or ``[N, units]``, and the last one the scores."""
        return self._run(x, collect=True)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, collect=False)[0]

    def _run(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The layers in order (for an MLP exactly the operations of earlier releases, so that
        its training stays bit for bit); with ``collect``, each weighted layer's output too."""
        outputs = []
        last = len(self.linears) - 1
        spatial = self.network.is_image and not isinstance(self.network.layers[0], Dense)
        if spatial:  # rows, columns, channels innermost -> PyTorch's N, C, H, W
            c, h, w = self.network.input_shape
            x = x.reshape(x.shape[0], h, w, c).permute(0, 3, 1, 2)
        for kind, value in self._stages:
            if kind == "pool":
                x = nn.functional.max_pool2d(x, value)
                continue
            linear, norm = self.linears[value], self.norms[value]
            if spatial and isinstance(linear, BinaryLinear):
                x = x.permute(0, 2, 3, 1).flatten(1)  # H x W x C order, channels innermost
                spatial = False
            x = norm(linear(x))
            if value != last:
                x = torch.relu(x)
            if collect:
                outputs.append(x.permute(0, 2, 3, 1).flatten(1) if spatial else x)
        return x, outputs

    def set_test_weights(self, mode: TestWeights) -> None:
        """Evaluate with ``"binary"`` or ``"real"`` weights (stochastic models offer both)."""
        for linear in self.linears:
            if linear.is_binary:
                linear.test_weights = mode

    def clip_(self) -> None:
        for linear in self.linears:
            linear.clip_()

    def param_groups(self, lr: float) -> list[dict]:
        """Adam parameter groups: each binary weight at ``lr * lr_scale``; the rest at ``lr``.

        The ``base_lr`` entry lets the schedule set ``lr = schedule(epoch) * base_lr``.
        """
        groups: list[dict] = []
        plain: list[nn.Parameter] = []
        for linear in self.linears:
            groups.append(
                {"params": [linear.weight], "lr": lr * linear.lr_scale, "lr_scale": linear.lr_scale}
            )
            plain.append(linear.bias)
        for norm in self.norms:
            plain.extend([norm.weight, norm.bias])
        groups.append({"params": plain, "lr": lr, "lr_scale": 1.0})
        return groups


BinaryConnectMLP = BinaryConnectNet  # the name of earlier releases


def square_hinge_loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``mean(max(0, 1 - t * y)^2)`` over batch and classes, with one-hot targets in {-1, +1}."""
    targets = 2.0 * nn.functional.one_hot(labels, output.shape[1]).to(output.dtype) - 1.0
    return torch.clamp(1.0 - targets * output, min=0.0).square().mean()


def cross_entropy_loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(output, labels)


LOSSES = {"square-hinge": square_hinge_loss, "cross-entropy": cross_entropy_loss}
assert tuple(LOSSES) == options.LOSSES
