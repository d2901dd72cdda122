"""Network architectures in the paper's notation: ``1x28x28-32C3-MP2-64C3-MP2-512-10``.

The first token is the input: ``CxHxW`` (channels, height, width) for images, or a plain number
of features for a permutation-invariant MLP. Then, in order:

- ``NCk``: a convolution with ``N`` output channels and a ``k x k`` kernel (``k`` odd), stride 1,
  zero padding ``(k-1)/2`` that keeps the size; ``NCkpP`` pads ``P`` instead (``32C5p0``: none);
- ``MPk``: ``k x k`` max pooling with stride ``k`` (a last row or column that does not fill a
  window is dropped, as in PyTorch);
- a plain number: a dense layer of that many units; the last token is the class count.

Convolutions and pooling come before the dense layers and need an image input. Plain Python (no
PyTorch, no numpy), so that ``bchw --help`` stays fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bchw.errors import BchwError

MAX_LAYER_WIDTH = 1 << 16  # units of a dense layer, channels of a convolution, features
MAX_SIDE = 1 << 12  # image height and width
MAX_KERNEL = 15

# ASCII digits only: str.isdigit takes superscripts that int() refuses.
_NUMBER = r"([0-9]+)"
_CONV = re.compile(rf"{_NUMBER}C{_NUMBER}(?:p{_NUMBER})?", re.IGNORECASE)
_POOL = re.compile(rf"MP{_NUMBER}", re.IGNORECASE)
_IMAGE = re.compile(rf"{_NUMBER}x{_NUMBER}x{_NUMBER}", re.IGNORECASE)
_DENSE = re.compile(_NUMBER)
EXAMPLES = "784-1024-1024-1024-10 or 1x28x28-32C3-MP2-64C3-MP2-512-10"


@dataclass(frozen=True)
class Conv:
    """``out_channels`` filters of ``kernel x kernel``, stride 1, ``padding`` zeros each side."""

    out_channels: int
    kernel: int
    padding: int

    def token(self) -> str:
        same = (self.kernel - 1) // 2
        return f"{self.out_channels}C{self.kernel}" + (
            f"p{self.padding}" if self.padding != same else ""
        )


@dataclass(frozen=True)
class Pool:
    """``size x size`` max pooling, stride ``size``."""

    size: int

    def token(self) -> str:
        return f"MP{self.size}"


@dataclass(frozen=True)
class Dense:
    units: int

    def token(self) -> str:
        return str(self.units)


Layer = Conv | Pool | Dense


@dataclass(frozen=True)
class Network:
    """An input shape and its layers. ``input_shape`` is ``(features,)`` or ``(C, H, W)``."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...]

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    @property
    def is_mlp(self) -> bool:
        """Dense layers only, on a flat input (the format and hardware of an MLP)."""
        return not self.is_image and all(isinstance(layer, Dense) for layer in self.layers)

    @property
    def input_features(self) -> int:
        out = 1
        for dim in self.input_shape:
            out *= dim
        return out

    @property
    def num_classes(self) -> int:
        last = self.layers[-1]
        assert isinstance(last, Dense)
        return last.units

    def shapes(self) -> list[tuple[int, ...]]:
        """The shape after each stage, the input first: ``(C, H, W)`` or ``(features,)``."""
        shape = self.input_shape
        out = [shape]
        for layer in self.layers:
            if isinstance(layer, Dense):
                shape = (layer.units,)
            elif isinstance(layer, Conv):
                c, h, w = shape
                grow = 2 * layer.padding - layer.kernel + 1
                shape = (layer.out_channels, h + grow, w + grow)
            else:
                c, h, w = shape
                shape = (c, h // layer.size, w // layer.size)
            out.append(shape)
        return out

    def sizes(self) -> list[int]:
        """An MLP's layer sizes, input first (``[784, 1024, 10]``)."""
        if not self.is_mlp:
            raise BchwError(f"the architecture {self.text()} is not an MLP: it has no sizes list")
        return [self.input_shape[0]] + [layer.units for layer in self.layers]  # type: ignore[union-attr]

    def text(self) -> str:
        """The canonical string (what ``parse_network`` reads back to the same network)."""
        head = "x".join(map(str, self.input_shape))
        return "-".join([head] + [layer.token() for layer in self.layers])


def parse_network(arch: str) -> Network:
    """Parse an architecture string; one-line errors naming the token at fault."""
    if len(arch) > 80:  # errors quote the string: a long one is shown by its start
        shown = arch[:60] + "..."
        try:
            return _parse(arch)
        except BchwError as exc:
            raise BchwError(str(exc).replace(repr(arch), repr(shown))) from None
    return _parse(arch)


def _int(arch: str, digits: str) -> int:
    """A number of the architecture string (no more than 9 digits: larger is no size)."""
    if len(digits) > 9:
        raise BchwError(f"architecture {arch!r}: the number {digits[:12]}... is too large")
    return int(digits)


def _parse(arch: str) -> Network:
    text = arch.replace(" ", "")
    tokens = text.split("-")
    if len(tokens) < 2 or not all(tokens):
        raise BchwError(
            f"architecture {arch!r} needs an input and a class count joined by '-', such as "
            f"{EXAMPLES}"
        )
    input_shape = _parse_input(arch, tokens[0])
    layers: list[Layer] = []
    for token in tokens[1:]:
        layers.append(_parse_layer(arch, token))
    network = Network(input_shape, tuple(layers))
    _check(arch, network)
    return network


def _parse_input(arch: str, token: str) -> tuple[int, ...]:
    image = _IMAGE.fullmatch(token)
    if image:
        shape = tuple(_int(arch, g) for g in image.groups())
        c, h, w = shape
        if not (1 <= c <= MAX_LAYER_WIDTH and 1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise BchwError(
                f"architecture {arch!r}: input {token} must have 1..{MAX_LAYER_WIDTH} channels "
                f"and sides of 1..{MAX_SIDE}"
            )
        return shape
    if _DENSE.fullmatch(token):
        features = _int(arch, token)
        if not 1 <= features <= MAX_LAYER_WIDTH:
            raise BchwError(
                f"architecture {arch!r}: input size {token} is outside 1..{MAX_LAYER_WIDTH}"
            )
        return (features,)
    shown = token if len(token) <= 24 else token[:20] + "..."
    raise BchwError(
        f"architecture {arch!r}: the input {shown!r} is neither a size (784) nor CxHxW "
        f"(1x28x28); examples: {EXAMPLES}"
    )


def _parse_layer(arch: str, token: str) -> Layer:
    if _DENSE.fullmatch(token):
        return Dense(_int(arch, token))
    conv = _CONV.fullmatch(token)
    if conv:
        channels, kernel = _int(arch, conv.group(1)), _int(arch, conv.group(2))
        if kernel % 2 == 0 or not 1 <= kernel <= MAX_KERNEL:
            raise BchwError(
                f"architecture {arch!r}: {token}: the kernel size must be odd, 1..{MAX_KERNEL}"
            )
        padding = (kernel - 1) // 2 if conv.group(3) is None else _int(arch, conv.group(3))
        if padding > (kernel - 1) // 2:
            raise BchwError(
                f"architecture {arch!r}: {token}: padding {padding} exceeds "
                f"{(kernel - 1) // 2}, the padding that keeps a {kernel}x{kernel} "
                "convolution's size"
            )
        return Conv(channels, kernel, padding)
    pool = _POOL.fullmatch(token)
    if pool:
        return Pool(_int(arch, pool.group(1)))
    shown = token if len(token) <= 24 else token[:20] + "..."
    raise BchwError(
        f"architecture {arch!r}: {shown!r} is not a layer: use N (dense), NCk (convolution, "
        "such as 32C3, or 32C5p0 without padding) or MPk (max pooling, such as MP2)"
    )


def _check(arch: str, network: Network) -> None:
    if not isinstance(network.layers[-1], Dense):
        raise BchwError(f"architecture {arch!r} must end in the class count (a plain number)")
    seen_dense = False
    for layer in network.layers:  # the order first: shapes() needs images before dense layers
        if isinstance(layer, Dense):
            seen_dense = True
        elif seen_dense or not network.is_image:
            where = "after a dense layer" if seen_dense else "on a flat input"
            raise BchwError(
                f"architecture {arch!r}: {layer.token()} cannot come {where}; convolutions and "
                "pooling need an image input such as 1x28x28 and come before the dense layers"
            )
    for layer, shape in zip(network.layers, network.shapes()[:-1], strict=True):
        token = layer.token()
        if isinstance(layer, Dense):
            if not 1 <= layer.units <= MAX_LAYER_WIDTH:
                raise BchwError(
                    f"architecture {arch!r}: a dense layer of {layer.units} units is outside "
                    f"1..{MAX_LAYER_WIDTH}"
                )
            features = 1
            for dim in shape:
                features *= dim
            if features > MAX_LAYER_WIDTH:
                raise BchwError(
                    f"architecture {arch!r}: dense layer {token} would take {features} inputs "
                    f"({'x'.join(map(str, shape))}), more than {MAX_LAYER_WIDTH}: pool further"
                )
            continue
        c, h, w = shape
        if isinstance(layer, Conv):
            if not 1 <= layer.out_channels <= MAX_LAYER_WIDTH:
                raise BchwError(
                    f"architecture {arch!r}: {token} has {layer.out_channels} channels, outside "
                    f"1..{MAX_LAYER_WIDTH}"
                )
            if c * layer.kernel * layer.kernel > MAX_LAYER_WIDTH:
                raise BchwError(
                    f"architecture {arch!r}: {token}'s window of {c}x{layer.kernel}x"
                    f"{layer.kernel} exceeds {MAX_LAYER_WIDTH} inputs"
                )
            side = min(h, w) + 2 * layer.padding - layer.kernel + 1
            if side < 1:
                raise BchwError(f"architecture {arch!r}: {token} does not fit its {h}x{w} input")
        else:
            if not 2 <= layer.size <= min(h, w):
                raise BchwError(
                    f"architecture {arch!r}: {token} needs a size of 2..{min(h, w)} on its "
                    f"{h}x{w} input"
                )
