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


class BinaryLinear(nn.Linear):
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
        super().__init__(in_features, out_features, bias=True)
        if binarization not in BINARIZATIONS:
            raise BchwError(f"unknown binarization {binarization!r}")
        self.binarization = binarization
        self.test_weights: TestWeights = "binary" if binarization != "none" else "real"
        self.generator: torch.Generator | None = None
        with torch.no_grad():
            if binarization != "none":
                self.weight.uniform_(-H, H)
            self.bias.zero_()

    @property
    def is_binary(self) -> bool:
        return self.binarization != "none"

    @property
    def lr_scale(self) -> float:
        """Glorot learning-rate scale ``1 / sqrt(1.5 / (fan_in + fan_out))`` for binary weights."""
        if not self.is_binary:
            return 1.0
        return 1.0 / math.sqrt(1.5 / (self.in_features + self.out_features))

    def effective_weight(self) -> torch.Tensor:
        w = self.weight
        if not self.is_binary:
            return w
        if not self.training and self.test_weights == "real":
            return w
        stochastic = self.training and self.binarization == "stochastic"
        return _StraightThrough.apply(w, stochastic, self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.effective_weight(), self.bias)

    def clip_(self) -> None:
        """Clip the real weights to [-H, H] (after every optimizer step)."""
        if self.is_binary:
            with torch.no_grad():
                self.weight.clamp_(-H, H)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, binarization={self.binarization}"


class BinaryConnectMLP(nn.Module):
    """Dense layers, each followed by batch norm; ReLU on the hidden layers.

    The output layer is binary and batch-normalized too, as in the paper. Batch norm follows the
    original code's constants: momentum (alpha) 0.15 and epsilon 1e-4 by default.
    """

    def __init__(
        self,
        sizes: list[int],
        binarization: Binarization = "deterministic",
        bn_momentum: float = 0.15,
        bn_eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.binarization = binarization
        self.linears = nn.ModuleList(
            BinaryLinear(n_in, n_out, binarization)
            for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(n_out, eps=bn_eps, momentum=bn_momentum) for n_out in sizes[1:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.linears) - 1
        for index, (linear, norm) in enumerate(zip(self.linears, self.norms, strict=True)):
            x = norm(linear(x))
            if index != last:
                x = torch.relu(x)
        return x

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


def square_hinge_loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``mean(max(0, 1 - t * y)^2)`` over batch and classes, with one-hot targets in {-1, +1}."""
    targets = 2.0 * nn.functional.one_hot(labels, output.shape[1]).to(output.dtype) - 1.0
    return torch.clamp(1.0 - targets * output, min=0.0).square().mean()


def cross_entropy_loss(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(output, labels)


LOSSES = {"square-hinge": square_hinge_loss, "cross-entropy": cross_entropy_loss}
assert tuple(LOSSES) == options.LOSSES
