"""Inputs beyond the data set: corner vectors, random vectors and directed searches.

Real images rarely exercise some corners of the hardware: the argmax tie rule needs two equal
top scores, the saturation logic needs a value above the output range. The directed searches
hill-climb on the integer reference (cheap, vectorised numpy) until they find inputs that reach
those corners, so the cosimulation, and the fault self-check, are sure to exercise them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bchw.core import reference
from bchw.core.intmodel import IntegerModel, output_range


@dataclass(frozen=True)
class Vectors:
    """Named input vectors, ``uint[N, input_size]``."""

    names: tuple[str, ...]
    images: np.ndarray

    def __len__(self) -> int:
        return len(self.names)

    def __add__(self, other: Vectors) -> Vectors:
        return Vectors(self.names + other.names, np.concatenate([self.images, other.images]))


def _empty(model: IntegerModel) -> Vectors:
    return Vectors((), np.zeros((0, model.input_size), dtype=np.int64))


def corner_vectors(model: IntegerModel) -> Vectors:
    """All zero, all maximum, alternating both ways, and a single hot pixel first/middle/last."""
    n, top = model.input_size, (1 << model.input_bits) - 1
    names, rows = [], []

    def add(name: str, row: np.ndarray) -> None:
        names.append(name)
        rows.append(row)

    add("all zero", np.zeros(n, np.int64))
    add("all maximum", np.full(n, top, np.int64))
    add("alternating max/0", np.where(np.arange(n) % 2 == 0, top, 0))
    add("alternating 0/max", np.where(np.arange(n) % 2 == 1, top, 0))
    for position in sorted({0, n // 2, n - 1}):
        row = np.zeros(n, np.int64)
        row[position] = top
        add(f"single hot pixel {position}", row)
    return Vectors(tuple(names), np.stack(rows))


def random_vectors(model: IntegerModel, count: int, seed: int = 0) -> Vectors:
    """Uniform random pixels over the whole input range."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 1 << model.input_bits, size=(count, model.input_size))
    return Vectors(tuple(f"random {k}" for k in range(count)), images.astype(np.int64))


def _pre_clamp(model: IntegerModel, images: np.ndarray, layer_index: int) -> np.ndarray:
    """Layer ``layer_index``'s requantized values before saturation, one row per image (a
    convolution's over every output pixel; a pooling layer's are its inputs)."""
    x = images
    if len(model.input_shape) == 3:
        c, h, w = model.input_shape
        x = images.reshape(len(images), h, w, c)
    for index, layer in enumerate(model.layers):
        if layer.kind == "maxpool":
            v = x
            y = reference.max_pool(layer, x)
        else:
            acc = (
                reference.convolve(layer, x)
                if layer.kind == "conv"
                else reference.accumulate(layer, x.reshape(len(x), -1))
            )
            v = reference.requantize(layer, acc)
            y, _ = reference.saturate(layer, v)
        if index == layer_index:
            return v.reshape(len(v), -1)
        x = y
    raise IndexError(layer_index)


def _top_gap(model: IntegerModel, images: np.ndarray) -> np.ndarray:
    scores = reference.run(model, images).scores
    ordered = np.sort(scores, axis=1)
    return ordered[:, -1] - ordered[:, -2]


def _climb(
    model: IntegerModel,
    start: np.ndarray,
    cost: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    steps: int,
    tries: int = 16,
) -> np.ndarray:
    """Lower ``cost`` (reached at <= 0) by changing a few pixels at a time; returns the inputs
    that reached it (possibly none)."""
    top = (1 << model.input_bits) - 1
    current = start.astype(np.int64).copy()
    current_cost = cost(current)
    for _ in range(steps):
        if (current_cost <= 0).any():
            break
        trial = np.repeat(current, tries, axis=0)
        rows = np.arange(len(trial))
        for _ in range(max(1, model.input_size // 64)):
            columns = rng.integers(0, model.input_size, size=len(trial))
            trial[rows, columns] = rng.integers(0, top + 1, size=len(trial))
        trial_cost = cost(trial).reshape(len(current), tries)
        best = trial_cost.argmin(axis=1)
        better = trial_cost[np.arange(len(current)), best] <= current_cost
        chosen = trial.reshape(len(current), tries, -1)[np.arange(len(current)), best]
        current[better] = chosen[better]
        current_cost[better] = trial_cost[np.arange(len(current)), best][better]
    return current[current_cost <= 0]


def tie_vectors(model: IntegerModel, count: int = 2, seed: int = 0, steps: int = 200) -> Vectors:
    """Inputs whose two best scores are equal (the argmax tie rule decides the class)."""
    if model.num_classes < 2:
        return _empty(model)
    rng = np.random.default_rng(seed)
    start = rng.integers(0, 1 << model.input_bits, size=(32, model.input_size))
    found = _climb(model, start, lambda x: _top_gap(model, x), rng, steps)[:count]
    return Vectors(tuple(f"tie at the top {k}" for k in range(len(found))), found)


def saturating_vectors(model: IntegerModel, seed: int = 0, steps: int = 200) -> Vectors:
    """Per layer, an input that drives some neuron of that layer above its output range."""
    rng = np.random.default_rng(seed)
    names, rows = [], []
    top = (1 << model.input_bits) - 1
    for index, layer in enumerate(model.layers):
        if layer.kind == "maxpool":  # pooling saturates nothing
            continue
        _, hi = output_range(layer.output_bits, layer.output_signed)
        start = np.concatenate(
            [
                np.full((1, model.input_size), top),
                rng.integers(0, top + 1, size=(15, model.input_size)),
            ]
        )

        def headroom(x: np.ndarray, index: int = index, hi: int = hi) -> np.ndarray:
            return hi + 1 - _pre_clamp(model, x, index).max(axis=1)

        found = _climb(model, start, headroom, rng, steps)
        if len(found):
            names.append(f"saturates layer {index}")
            rows.append(found[0])
    if not rows:
        return _empty(model)
    return Vectors(tuple(names), np.stack(rows))


def stress_vectors(model: IntegerModel, random_count: int = 16, seed: int = 0) -> Vectors:
    """Corner, directed (ties, saturation per layer) and random vectors together."""
    return (
        corner_vectors(model)
        + tie_vectors(model, seed=seed)
        + saturating_vectors(model, seed=seed)
        + random_vectors(model, random_count, seed=seed)
    )
