"""Export: a trained checkpoint becomes an integer model, through a flow of small steps.

Each step is a plain function with one job, from one :class:`ExportDraft` to the next; the
flow is :data:`FLOW`, in order:

1. :func:`fold_batch_norm` - bias and batch norm per neuron into ``h = g * (z - m) + beta``;
2. :func:`calibrate_formats` - fractional bits of each layer's output, by calibration;
3. :func:`quantize_scales` - each neuron's scale as at most K signed powers of two;
4. :func:`compute_offsets` - the layer's final shift R and each neuron's integer offset.

:func:`build_integer_model` then assembles the :class:`~bchw.core.intmodel.IntegerModel`.
Every step fills fields of the draft the next ones read, so the order is fixed; each is
testable alone on a draft that has what it reads.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from bchw import __version__
from bchw.core.arch import Conv, Pool
from bchw.core.checkpoint import Checkpoint
from bchw.core.intmodel import ConvLayer, IntegerLayer, IntegerModel, MaxPoolLayer, output_range
from bchw.core.options import ExportOptions
from bchw.errors import BchwError

CALIBRATION_SEED = 0
# Scale exponents below -MAX_SCALE_SHIFT are dropped: with accumulators under 2^26 they move
# the pre-rounding value by less than 2^-(MAX_SCALE_SHIFT-26) LSB.
MAX_SCALE_SHIFT = 30
FRAC_SEARCH = range(-16, 33)
CALIBRATION_VALUES = 1 << 18
CALIBRATION_BATCH_VALUES = 1 << 23  # float64 activations per calibration batch (64 MiB a layer)


@dataclass(frozen=True)
class LayerDraft:
    """One layer on its way to integers; later passes fill the optional fields.

    In real units the layer computes ``h = g * (z - m) + beta`` with ``z = W_b x_real`` (bias
    and batch norm folded), then ReLU on hidden layers.
    """

    weights: np.ndarray  # int8 [out, in], +1/-1
    bias: np.ndarray
    bn_mean: np.ndarray
    bn_var: np.ndarray
    bn_gamma: np.ndarray
    bn_beta: np.ndarray
    bn_eps: float
    gain: np.ndarray | None = None  # g
    center: np.ndarray | None = None  # m, in real units of z
    beta: np.ndarray | None = None
    frac_bits: int | None = None  # output fixed point: real = int * 2^-frac_bits
    scale: np.ndarray | None = None  # exact A = g * s_in * 2^frac_bits, per neuron
    scale_sign: np.ndarray | None = None  # [out, K]
    scale_exp: np.ndarray | None = None  # [out, K], power-of-two exponents
    requant_shift: int | None = None
    offset: np.ndarray | None = None

    @property
    def in_features(self) -> int:
        return int(self.weights.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weights.shape[0])

    def approx_scale(self) -> np.ndarray:
        """A' = sum_k s_k 2^e_k, the multiplier-free scale."""
        assert self.scale_sign is not None and self.scale_exp is not None
        return (self.scale_sign * np.ldexp(1.0, self.scale_exp)).sum(axis=1)


@dataclass(frozen=True)
class ExportDraft:
    layers: tuple[LayerDraft, ...]
    input_scale: float
    input_bits: int
    options: ExportOptions
    calibration: np.ndarray  # uint8 images used to choose formats
    float_model: torch.nn.Module

    def input_lsb(self, index: int) -> float:
        """Real value of one input LSB of layer ``index`` (s_in)."""
        if index == 0:
            return self.input_scale
        frac = self.layers[index - 1].frac_bits
        assert frac is not None
        return math.ldexp(1.0, -frac)

    def output_bits(self, index: int) -> int:
        last = index == len(self.layers) - 1
        return self.options.output_bits if last else self.options.act_bits


def _replace_layers(draft: ExportDraft, layers: list[LayerDraft]) -> ExportDraft:
    return replace(draft, layers=tuple(layers))


def fold_batch_norm(draft: ExportDraft) -> ExportDraft:
    """Fold the dense bias and batch norm: ``g = gamma / sqrt(var + eps)``, ``m = mean - bias``."""
    layers = []
    for layer in draft.layers:
        gain = layer.bn_gamma / np.sqrt(layer.bn_var + layer.bn_eps)
        layers.append(
            replace(layer, gain=gain, center=layer.bn_mean - layer.bias, beta=layer.bn_beta)
        )
    return _replace_layers(draft, layers)


def best_frac_bits(values: np.ndarray, bits: int, signed: bool) -> int:
    """Fractional bits that minimise the mean squared rounding-and-saturation error.

    Ties go to the format with more range (fewer fractional bits). Large inputs are evaluated on
    an evenly spaced subsample of at most ``CALIBRATION_VALUES`` values (deterministic).
    """
    values = np.ravel(values)
    if values.size > CALIBRATION_VALUES:
        values = values[np.linspace(0, values.size - 1, CALIBRATION_VALUES).astype(np.int64)]
    lo, hi = output_range(bits, signed)
    best_f, best_err = 0, math.inf
    for f in FRAC_SEARCH:
        q = np.clip(np.floor(values * 2.0**f + 0.5), lo, hi) * 2.0**-f
        err = float(np.mean((q - values) ** 2))
        if err < best_err:
            best_f, best_err = f, err
    return best_f


def calibrate_formats(draft: ExportDraft) -> ExportDraft:
    """Choose each layer's output fractional bits from the float model's activations on
    calibration images (or take the user's override)."""
    override = draft.options.frac_bits
    n = len(draft.layers)
    if override is not None:
        chosen = list(override) * n if len(override) == 1 else list(override)
    else:
        chosen = []
        for index, values in enumerate(float_activations(draft)):
            signed = index == n - 1
            chosen.append(best_frac_bits(values, draft.output_bits(index), signed))
    layers = [replace(layer, frac_bits=f) for layer, f in zip(draft.layers, chosen, strict=True)]
    return _replace_layers(draft, layers)


@torch.no_grad()
def float_activations(draft: ExportDraft) -> list[np.ndarray]:
    """Per layer, the float model's outputs on the calibration images (after ReLU on hidden
    layers), in float64. An MLP's come whole; a CNN's, whose feature maps would take tens of
    GiB over 10,000 images, come in batches, each layer's kept at the evenly spaced positions
    :func:`best_frac_bits` reads (the positions it would pick from the whole)."""
    model = copy.deepcopy(draft.float_model).double().eval()
    model.set_test_weights("binary")
    images = draft.calibration
    scale = draft.input_scale
    if model.network.is_mlp:
        x = torch.from_numpy(images.astype(np.float64) * scale)
        return [out.numpy().copy() for out in model.stage_outputs(x)]
    per_image = [math.prod(shape) for shape in _weighted_output_shapes(model.network)]
    n = len(images)
    picks = [
        np.linspace(0, n * v - 1, CALIBRATION_VALUES).astype(np.int64)
        if n * v > CALIBRATION_VALUES
        else np.arange(n * v)
        for v in per_image
    ]
    kept: list[list[np.ndarray]] = [[] for _ in per_image]
    batch = max(1, CALIBRATION_BATCH_VALUES // max(per_image))
    for start in range(0, n, batch):
        x = torch.from_numpy(images[start : start + batch].astype(np.float64) * scale)
        for layer, (out, v, pick) in enumerate(
            zip(model.stage_outputs(x), per_image, picks, strict=True)
        ):
            lo, hi = start * v, (start + len(x)) * v
            inside = pick[(pick >= lo) & (pick < hi)] - lo
            kept[layer].append(out.numpy().reshape(-1)[inside].copy())
    return [np.concatenate(parts) for parts in kept]


def _weighted_output_shapes(network) -> list[tuple[int, ...]]:
    """The output shape of each convolution and dense layer (before any pooling after it)."""
    return [
        shape
        for layer, shape in zip(network.layers, network.shapes()[1:], strict=True)
        if not isinstance(layer, Pool)
    ]


def approximate_spt(values: np.ndarray, terms: int, min_exp: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate each value by a sum of at most ``terms`` signed powers of two.

    Greedy with look-ahead: at each step both neighbouring powers of two of the residual are
    tried, so all 2^terms paths are searched and the closest sum kept (fewer terms on a tie).
    Exponents are at least ``min_exp``. Returns ``(signs int8 [n, terms], exps int64 [n, terms])``
    with unused terms as sign 0, exponent 0.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    best_sign = np.zeros((n, terms), dtype=np.int8)
    best_exp = np.zeros((n, terms), dtype=np.int64)
    best_err = np.abs(values)
    paths = [(values.copy(), np.zeros((n, 0), np.int8), np.zeros((n, 0), np.int64))]
    for step in range(terms):
        grown = []
        for residual, signs, exps in paths:
            mag = np.abs(residual)
            with np.errstate(divide="ignore"):
                floor_exp = np.floor(np.log2(np.where(mag > 0, mag, 1.0))).astype(np.int64)
            for candidate in (floor_exp, floor_exp + 1):
                e = np.maximum(candidate, min_exp)
                s = np.sign(residual).astype(np.int8)
                # A term that cannot reduce the error is left out.
                s[mag <= np.ldexp(1.0, e) / 2] = 0
                e = np.where(s == 0, 0, e)
                new_residual = residual - s * np.ldexp(1.0, e)
                new_signs = np.concatenate([signs, s[:, None]], axis=1)
                new_exps = np.concatenate([exps, e[:, None]], axis=1)
                grown.append((new_residual, new_signs, new_exps))
                err = np.abs(new_residual)
                better = err < best_err
                best_err = np.where(better, err, best_err)
                pad = terms - step - 1
                best_sign[better] = np.pad(new_signs, ((0, 0), (0, pad)))[better]
                best_exp[better] = np.pad(new_exps, ((0, 0), (0, pad)))[better]
        paths = grown
    return best_sign, best_exp


def quantize_scales(draft: ExportDraft) -> ExportDraft:
    """Each neuron's scale ``A = g * s_in * 2^f_out`` (output LSBs per accumulator unit) as a sum
    of at most K signed powers of two."""
    layers = []
    for index, layer in enumerate(draft.layers):
        assert layer.gain is not None and layer.frac_bits is not None
        scale = layer.gain * draft.input_lsb(index) * math.ldexp(1.0, layer.frac_bits)
        signs, exps = approximate_spt(scale, draft.options.scale_terms, -MAX_SCALE_SHIFT)
        layers.append(replace(layer, scale=scale, scale_sign=signs, scale_exp=exps))
    return _replace_layers(draft, layers)


def compute_offsets(draft: ExportDraft) -> ExportDraft:
    """The layer's final shift ``R`` (enough for its smallest power of two) and each neuron's
    offset ``round((beta * 2^f - A' * m / s_in) * 2^R)``.

    The offset is built with the quantized scale A', so the neuron's zero crossing stays where
    batch norm put it: quantizing the scale tilts the slope, never moves the threshold.
    """
    layers = []
    for index, layer in enumerate(draft.layers):
        assert layer.scale_sign is not None and layer.scale_exp is not None
        assert layer.center is not None and layer.beta is not None
        assert layer.frac_bits is not None
        used = layer.scale_sign != 0
        lowest = int(layer.scale_exp[used].min()) if used.any() else 0
        shift = max(0, -lowest)
        center_acc = layer.center / draft.input_lsb(index)
        exact = layer.beta * math.ldexp(1.0, layer.frac_bits) - layer.approx_scale() * center_acc
        offset = np.rint(exact * math.ldexp(1.0, shift))
        if not np.all(np.abs(offset) < 2.0**62):
            raise BchwError(f"layer {index}: requantization offset out of range")
        layers.append(replace(layer, requant_shift=shift, offset=offset.astype(np.int64)))
    return _replace_layers(draft, layers)


ExportStep = Callable[[ExportDraft], ExportDraft]
FLOW: tuple[ExportStep, ...] = (
    fold_batch_norm,
    calibrate_formats,
    quantize_scales,
    compute_offsets,
)


def run_flow(draft: ExportDraft, flow: tuple[ExportStep, ...] = FLOW) -> ExportDraft:
    for step in flow:
        draft = step(draft)
    return draft


def draft_from_checkpoint(
    checkpoint: Checkpoint, calibration: np.ndarray, options: ExportOptions
) -> ExportDraft:
    """The starting draft: binary weights (sign of the real weights) and batch-norm state."""
    model = checkpoint.model
    if model.binarization == "none":
        raise BchwError(
            "the checkpoint has float weights (binarization 'none'); only BinaryConnect "
            "models export to integers"
        )
    options.check(len(model.linears))
    if checkpoint.pixel_max >= 1 << options.input_bits:
        raise BchwError(
            f"{checkpoint.dataset} pixels reach {checkpoint.pixel_max}, which does not fit "
            f"{options.input_bits} input bits"
        )
    layers = []
    for linear, norm in zip(model.linears, model.norms, strict=True):
        as64 = lambda t: t.detach().to(torch.float64).numpy().copy()  # noqa: E731
        layers.append(
            LayerDraft(
                weights=linear.binary_rows().numpy().astype(np.int8),
                bias=as64(linear.bias),
                bn_mean=as64(norm.running_mean),
                bn_var=as64(norm.running_var),
                bn_gamma=as64(norm.weight),
                bn_beta=as64(norm.bias),
                bn_eps=float(norm.eps),
            )
        )
    return ExportDraft(
        layers=tuple(layers),
        input_scale=checkpoint.input_scale,
        input_bits=options.input_bits,
        options=options,
        calibration=calibration,
        float_model=model,
    )


def build_integer_model(draft: ExportDraft, provenance: dict) -> IntegerModel:
    """The integer model: each weighted layer's constants, with the pooling layers and the
    convolutions' geometry from the float model's architecture."""
    network = draft.float_model.network
    weighted = []
    bits_in = draft.input_bits
    for index, layer in enumerate(draft.layers):
        assert layer.requant_shift is not None and layer.offset is not None
        assert layer.scale_exp is not None and layer.scale_sign is not None
        assert layer.frac_bits is not None
        shifts = np.where(layer.scale_sign != 0, layer.scale_exp + layer.requant_shift, 0)
        out_bits = draft.output_bits(index)
        last = index == len(draft.layers) - 1
        weighted.append(
            dict(
                weights=layer.weights,
                scale_sign=layer.scale_sign.astype(np.int8),
                scale_shift=shifts.astype(np.int64),
                offset=layer.offset,
                requant_shift=layer.requant_shift,
                input_bits=bits_in,
                output_bits=out_bits,
                activation="none" if last else "relu",
                output_frac_bits=layer.frac_bits,
            )
        )
        bits_in = out_bits
    layers: list = []
    bits = draft.input_bits
    constants = iter(weighted)
    for spec, shape in zip(network.layers, network.shapes(), strict=False):
        if isinstance(spec, Pool):
            c, h, w = shape
            layers.append(
                MaxPoolLayer(channels=c, in_height=h, in_width=w, size=spec.size, bits=bits)
            )
            continue
        fields = next(constants)
        if isinstance(spec, Conv):
            c, h, w = shape
            layer = ConvLayer(
                **fields, in_channels=c, in_height=h, in_width=w, kernel=spec.kernel,
                padding=spec.padding,
            )  # fmt: skip
        else:
            layer = IntegerLayer(**fields)
        layers.append(layer)
        bits = layer.output_bits
    return IntegerModel(
        input_size=network.input_features,
        input_bits=draft.input_bits,
        input_scale=draft.input_scale,
        layers=tuple(layers),
        provenance=provenance,
        input_shape=network.input_shape,
    )


def calibration_images(train_images: np.ndarray, count: int) -> np.ndarray:
    """A fixed, seeded subset of the training images."""
    if count >= len(train_images):
        return train_images
    pick = np.random.default_rng(CALIBRATION_SEED).choice(len(train_images), count, replace=False)
    return train_images[np.sort(pick)]


def export_checkpoint(
    checkpoint: Checkpoint,
    train_images: np.ndarray,
    options: ExportOptions,
) -> IntegerModel:
    """Run the default flow on a checkpoint and return the integer model."""
    calibration = calibration_images(train_images, options.calibration_images)
    draft = run_flow(draft_from_checkpoint(checkpoint, calibration, options))
    provenance = {
        "bchw_version": __version__,
        "dataset": checkpoint.dataset,
        "arch": checkpoint.config.get("arch"),
        "binarization": checkpoint.config.get("binarization"),
        "seed": checkpoint.config.get("seed"),
        "epoch": checkpoint.epoch,
        "checkpoint_sha256": checkpoint.sha256,
        "float_metrics": {k: float(v) for k, v in sorted(checkpoint.metrics.items())},
        "export": {
            "input_bits": options.input_bits,
            "act_bits": options.act_bits,
            "out_bits": options.output_bits,
            "scale_terms": options.scale_terms,
            "frac_bits_override": list(options.frac_bits) if options.frac_bits else None,
            "calibration_images": int(len(calibration)),
            "calibration_seed": CALIBRATION_SEED,
        },
    }
    if checkpoint.dataset_sha256:  # an archive: which one (built-in data sets have a name)
        provenance["dataset_sha256"] = checkpoint.dataset_sha256
    return build_integer_model(draft, provenance)


__all__ = [
    "FLOW",
    "ExportDraft",
    "LayerDraft",
    "approximate_spt",
    "best_frac_bits",
    "build_integer_model",
    "calibrate_formats",
    "compute_offsets",
    "export_checkpoint",
    "float_activations",
    "fold_batch_norm",
    "quantize_scales",
    "run_flow",
]
