"""Synthetic integer models: random weights and requantization constants of a given shape.

They exercise the generator, the estimator's calibration and the tests on shapes no trained
model has; their accuracy means nothing, their arithmetic is as exact as a trained model's.
"""

from __future__ import annotations

import numpy as np

from bchw.core.intmodel import IntegerLayer, IntegerModel


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
