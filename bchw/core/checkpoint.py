"""Training checkpoints: a plain dict of tensors and JSON-like values, loaded with
``torch.load(weights_only=True)`` so that no pickled code ever runs."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bchw.core.arch import parse_network
from bchw.core.nn import BinaryConnectNet
from bchw.core.options import BINARIZATIONS
from bchw.errors import BchwError, first_line
from bchw.outputs import write_bytes_atomic

CHECKPOINT_FORMAT = "bchw-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A trained float model and what it was trained on."""

    model: BinaryConnectNet
    config: dict[str, Any]
    dataset: str
    input_scale: float
    pixel_max: int
    epoch: int
    metrics: dict[str, float]
    sha256: str
    dataset_sha256: str = ""  # of the archive it was trained on (archives only)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: BinaryConnectNet,
    config: dict[str, Any],
    *,
    dataset: str,
    input_scale: float,
    pixel_max: int,
    epoch: int,
    metrics: dict[str, float],
    device: str | None = None,
    dataset_sha256: str = "",
) -> None:
    """Write the checkpoint atomically. ``device``: where a model trained off the CPU trained
    (absent for CPU runs, so their files stay as they were before devices existed);
    ``dataset_sha256``: the archive's hash, for a model trained on a ``.npz`` archive."""
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": dict(config),
        "dataset": dataset,
        "input_scale": float(input_scale),
        "pixel_max": int(pixel_max),
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    if device is not None:
        meta["device"] = device
    if dataset_sha256:
        meta["dataset_sha256"] = dataset_sha256
    # Pickle writes a string once and refers back to it when the same object recurs, so the
    # bytes would depend on which equal strings happen to be one object (an interned literal
    # or a command-line argument). A JSON round trip gives every value string its own object
    # (and shares the keys), whoever called: the same training gives the same file.
    payload = json.loads(json.dumps(meta))
    payload["state_dict"] = {
        k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load and check a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise BchwError(f"checkpoint {path} does not exist")
    try:
        data = path.read_bytes()
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise BchwError(f"{path}: not a readable bchw checkpoint ({first_line(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise BchwError(f"{path}: not a bchw checkpoint (no '{CHECKPOINT_FORMAT}' format tag)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise BchwError(
            f"{path}: checkpoint version {payload.get('version')!r} is not supported "
            f"(expected {CHECKPOINT_VERSION})"
        )
    try:
        config = payload["config"]
        network = parse_network(config["arch"])
        binarization = config["binarization"]
        if binarization not in BINARIZATIONS:
            raise BchwError(f"{path}: unknown binarization {binarization!r}")
        model = BinaryConnectNet(
            network,
            binarization=binarization,
            bn_momentum=float(config["bn_momentum"]),
            bn_eps=float(config["bn_eps"]),
        )
        state = payload["state_dict"]
        model.load_state_dict(state, strict=True)
    except BchwError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise BchwError(f"{path}: checkpoint is inconsistent ({first_line(exc)})") from None
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise BchwError(f"{path}: checkpoint tensor {name} holds NaN or infinite values")
    input_scale = payload.get("input_scale")
    if not isinstance(input_scale, float) or not math.isfinite(input_scale) or input_scale <= 0:
        raise BchwError(f"{path}: checkpoint input_scale {input_scale!r} is not a positive number")
    pixel_max = _whole_number(payload.get("pixel_max", 255), "pixel_max", path, 1, 0xFFFF)
    epoch = _whole_number(payload.get("epoch", -1), "epoch", path, -1, 1 << 31)
    metrics = payload.get("metrics", {})
    if not isinstance(metrics, dict):
        raise BchwError(f"{path}: checkpoint metrics are {type(metrics).__name__}, not a mapping")
    for key, value in metrics.items():  # error rates, as bchw train records them
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not isinstance(key, str) or not number or not -1e300 < value < 1e300:
            raise BchwError(
                f"{path}: checkpoint metric {str(key)[:40]!r} is not a named finite number "
                f"(a {type(value).__name__})"
            )
    model.eval()
    return Checkpoint(
        model=model,
        config=config,
        dataset=str(payload.get("dataset")),
        input_scale=input_scale,
        pixel_max=pixel_max,
        epoch=epoch,
        metrics=dict(metrics),
        sha256=hashlib.sha256(data).hexdigest(),
        dataset_sha256=str(payload.get("dataset_sha256", "")),
    )


def _whole_number(value: object, name: str, path: object, low: int, high: int) -> int:
    """A checkpoint field that must be an integer in ``low..high`` (a bool is not)."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if whole and low <= value <= high:
        return value
    if not whole:
        shown = f"of type {type(value).__name__}"
    else:  # str() of a huge integer is refused by Python itself
        shown = str(value) if abs(value) < 10**18 else "a very large integer"
    raise BchwError(f"{path}: checkpoint {name} is {shown}, not an integer in {low}..{high}")
