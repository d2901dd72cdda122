"""Synthetic integer models: random weights and requantization constants of a given shape.

They exercise the generator, the estimator's calibration and the tests on shapes no trained
model has; their accuracy means nothing, their arithmetic is as exact as a trained model's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from bchw.core.intmodel import MAX_SHIFT as MAX_REQUANT_SHIFT
from bchw.core.intmodel import ConvLayer, IntegerLayer, IntegerModel, MaxPoolLayer
from bchw.errors import BchwError


def random_layer(n_in, n_out, in_bits, out_bits, last, seed, terms=2, max_shift=6):
    """An IntegerLayer with random weights and requantization constants."""
    rng = np.random.default_rng(seed)
    sign = rng.integers(-1, 2, size=(n_out, terms)).astype(np.int8)
    shift = np.where(sign != 0, rng.integers(0, max_shift + 1, size=(n_out, terms)), 0)
    bound = n_in * ((1 << in_bits) - 1)
    return IntegerLayer(
        weights=rng.choice(np.array([-1, 1], np.int8), size=(n_out, n_in)),
        scale_sign=sign,
        scale_shift=shift.astype(np.int64),
        offset=rng.integers(-bound * 4, bound * 4 + 1, size=n_out).astype(np.int64),
        requant_shift=int(rng.integers(0, max_shift + 2)),
        input_bits=in_bits,
        output_bits=out_bits,
        activation="none" if last else "relu",
        output_frac_bits=0,
    )


def random_model(sizes, seed, input_bits=8, act_bits=4, out_bits=6, terms=2):
    """An IntegerModel of random layers with the given sizes (input, hidden..., classes)."""
    layers = []
    bits = input_bits
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = k == len(sizes) - 2
        layers.append(
            random_layer(
                n_in,
                n_out,
                bits,
                out_bits if last else act_bits,
                last,
                seed=seed * 31 + k,
                terms=terms,
            )
        )
        bits = act_bits
    return IntegerModel(
        input_size=sizes[0], input_bits=input_bits, input_scale=1.0, layers=tuple(layers)
    )


PROBE_IMAGES = 16


def random_network(
    arch: str,
    seed: int = 0,
    input_bits: int = 8,
    act_bits: int = 8,
    out_bits: int | None = None,
    scale_terms: int = 2,
    provenance: dict | None = None,
) -> IntegerModel:
    """A valid integer model of any architecture (``bchw random``): random +-1 weights, and
    requantization constants set from the accumulators that random pixels give, layer by
    layer, so that activations spread over their range as a trained model's do (a channel's
    typical spread maps to about a quarter of the output range, its ReLU threshold falls within
    that spread) instead of being all zero or all saturated. Deterministic in ``seed``."""
    from bchw.core import reference
    from bchw.core.arch import Conv, Dense, parse_network

    network = parse_network(arch)
    if not 0 <= seed < 1 << 63:
        raise BchwError(f"the seed must be a whole number from 0 to 2^63 - 1, got {seed}")
    out_bits = act_bits if out_bits is None else out_bits
    rng = np.random.default_rng(seed)
    probe = rng.integers(0, 1 << input_bits, size=(PROBE_IMAGES, network.input_features))
    if network.is_image:
        c, h, w = network.input_shape
        probe = probe.reshape(PROBE_IMAGES, h, w, c)
    layers: list = []
    bits = input_bits
    last_index = len(network.layers) - 1
    for index, (layer, shape) in enumerate(zip(network.layers, network.shapes(), strict=False)):
        if not isinstance(layer, Conv | Dense):
            c, h, w = shape
            pool = MaxPoolLayer(channels=c, in_height=h, in_width=w, size=layer.size, bits=bits)
            layers.append(pool)
            probe, _ = reference.layer_forward(pool, probe)
            continue
        last = index == last_index
        layer_bits = out_bits if last else act_bits
        if isinstance(layer, Conv):
            c, h, w = shape
            n_in, n_out = c * layer.kernel * layer.kernel, layer.out_channels
            geometry = dict(
                in_channels=c, in_height=h, in_width=w, kernel=layer.kernel, padding=layer.padding
            )
        else:
            n_in, n_out, geometry = int(np.prod(shape)), layer.units, {}
        cls = ConvLayer if isinstance(layer, Conv) else IntegerLayer
        weights = rng.choice(np.array([-1, 1], np.int8), size=(n_out, n_in))
        draft = cls(  # weights only, to measure the accumulators
            weights=weights,
            scale_sign=np.ones((n_out, 1), np.int8),
            scale_shift=np.zeros((n_out, 1), np.int64),
            offset=np.zeros(n_out, np.int64),
            requant_shift=0,
            input_bits=bits,
            output_bits=layer_bits,
            activation="none" if last else "relu",
            output_frac_bits=0,
            **geometry,
        )
        if isinstance(draft, ConvLayer):
            acc = reference.convolve(draft, probe).reshape(-1, n_out)
        else:
            acc = reference.accumulate(draft, probe.reshape(len(probe), -1))
        sign, shifts, offset, shift = _random_requantization(
            rng, acc, layer_bits, scale_terms, centred=last
        )
        built = replace(
            draft, scale_sign=sign, scale_shift=shifts, offset=offset, requant_shift=shift
        )
        layers.append(built)
        probe, _ = reference.layer_forward(built, probe)
        bits = layer_bits
    return IntegerModel(
        input_size=network.input_features,
        input_bits=input_bits,
        input_scale=1.0 / ((1 << input_bits) - 1),
        layers=tuple(layers),
        provenance=provenance or {},
        input_shape=network.input_shape,
    )


def _random_requantization(rng, acc, out_bits, terms, centred):
    """Signs, shifts (``h = e + R``), offsets and the final shift ``R`` of one layer from its
    probe accumulators ``acc[samples, channels]``."""
    n_out = acc.shape[1]
    mean = acc.mean(axis=0)
    spread = np.maximum(acc.std(axis=0), 1.0)
    scale = 2.0 ** (out_bits - 2) / spread  # output units per accumulator unit
    top = np.rint(np.log2(scale)).astype(np.int64)
    exps = np.zeros((n_out, terms), dtype=np.int64)
    sign = np.zeros((n_out, terms), dtype=np.int8)
    exps[:, 0] = top
    sign[:, 0] = np.where(rng.random(n_out) < 0.9, 1, -1)  # mostly positive gains, as trained
    for k in range(1, terms):
        exps[:, k] = exps[:, k - 1] - rng.integers(1, 4, size=n_out)
        sign[:, k] = rng.integers(-1, 2, size=n_out)
    used = sign != 0
    shift = int(min(max(0, -exps[used].min()), MAX_REQUANT_SHIFT))
    h = np.clip(exps + shift, 0, MAX_REQUANT_SHIFT)
    h = np.where(used, h, 0)
    gain = (sign * (np.ones_like(h) << h)).sum(axis=1).astype(np.float64)
    threshold = mean + (0.0 if centred else 1.0) * rng.uniform(-0.5, 0.5, size=n_out) * spread
    offset = np.rint(-gain * threshold)
    return sign, h.astype(np.int64), offset.astype(np.int64), shift
