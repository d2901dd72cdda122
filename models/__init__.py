"""The integer models shipped with bchw: this folder installs as the package ``bchw.models``.

They are package data (``importlib.resources``), so every command finds them in an installed
bchw as in a checkout; README.md here gives their commands, accuracy and hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from bchw.core import intmodel
from bchw.errors import BchwError

SHIPPED = ("digits", "mnist", "mnist-cnn")


@dataclass(frozen=True)
class Recipe:
    """How a shipped model was trained (what its file's provenance does not record)."""

    epochs: int
    seed: int
    threads: int  # torch threads: float training is bit for bit only at the same count
    machine: str  # the CPU kind it was trained on
    dataset: str  # what it was trained on


RECIPES = {
    "digits": Recipe(
        epochs=100, seed=0, threads=2, machine="Intel x86-64 with AVX-512", dataset="digits"
    ),
    "mnist": Recipe(
        epochs=250, seed=0, threads=2, machine="Intel x86-64 with AVX-512", dataset="mnist"
    ),
    "mnist-cnn": Recipe(epochs=40, seed=0, threads=1, machine="AMD EPYC (AVX2)", dataset="mnist"),
}


def shipped_file(name: str) -> str:
    """The shipped model's file name, as the user sees it (``models/digits.bchw``)."""
    return f"models/{name}.bchw"


def load_shipped(name: str) -> intmodel.IntegerModel:
    """The shipped model ``name`` (digits, mnist or mnist-cnn), read and validated."""
    if name not in SHIPPED:
        raise BchwError(f"no shipped model {name!r}: bchw ships {', '.join(SHIPPED)}")
    resource = resources.files(__name__).joinpath(f"{name}.bchw")
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise BchwError(f"the shipped model {shipped_file(name)} is missing ({exc})") from None
    try:
        return intmodel.from_bytes(data)
    except BchwError as exc:
        raise BchwError(f"the shipped model {shipped_file(name)} is damaged: {exc}") from None
