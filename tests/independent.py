"""An implementation of docs/integer-model.md written from the page alone.

It shares no code with bchw: it parses the file with struct and json, unpacks bits by hand,
accumulates in int64 with a matrix product of integers (a convolution window by window, over
explicitly zero-padded images), pools with Python's max over each block, and requantizes with
multiplication and floor division instead of shifts. Tests compare it with bchw's reference.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np


def _unpack(packed: np.ndarray, n_in: int) -> np.ndarray:
    i = np.arange(n_in)
    bits = (packed.astype(np.int64)[:, i // 8] >> (i % 8)) & 1
    return 2 * bits - 1


def parse(data: bytes) -> dict:
    assert data[:8] == b"BCHWIM\r\n"
    (header_len,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12 : 12 + header_len])
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    payload = data[12 + header_len : -32]
    layers = []
    for lh in header["layers"]:
        kind = lh.get("kind", "dense")  # version 1 has dense layers only, without "kind"
        if kind == "maxpool":
            layers.append({"kind": kind, "size": lh["size"]})
            continue
        arrays = {}
        for name, desc in lh["arrays"].items():
            raw = payload[desc["offset"] : desc["offset"] + desc["nbytes"]]
            arrays[name] = np.frombuffer(raw, dtype=np.dtype(desc["dtype"])).reshape(desc["shape"])
        if kind == "conv":
            n_in = lh["kernel"] * lh["kernel"] * lh["in_channels"]
        else:
            n_in = lh["in_features"]
        layers.append(
            {
                "kind": kind,
                "w": _unpack(arrays["weights"], n_in),
                "s": arrays["scale_sign"].astype(np.int64),
                "h": arrays["scale_shift"].astype(np.int64),
                "o": arrays["offset"].astype(np.int64),
                "R": lh["requant_shift"],
                "bits": lh["output_bits"],
                "signed": lh["output_signed"],
                "k": lh.get("kernel"),
                "p": lh.get("padding"),
            }
        )
    return {"header": header, "layers": layers}


def _requantize(layer: dict, acc: np.ndarray) -> np.ndarray:
    gain = (layer["s"] * 2 ** layer["h"]).sum(axis=1)
    rho = 2 ** (layer["R"] - 1) if layer["R"] > 0 else 0
    v = (acc * gain + layer["o"] + rho) // 2 ** layer["R"]
    b = layer["bits"]
    lo, hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if layer["signed"] else (0, 2**b - 1)
    return np.minimum(np.maximum(v, lo), hi)


def run(data: bytes, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model = parse(data)
    inp = model["header"]["input"]
    x = np.asarray(images, dtype=np.int64)
    if "shape" in inp and len(inp["shape"]) == 3:
        c, h, w = inp["shape"]
        x = x.reshape(len(x), h, w, c)  # rows, columns, channels innermost
    for layer in model["layers"]:
        if layer["kind"] == "maxpool":
            s = layer["size"]
            n, h, w, c = x.shape
            out = np.zeros((n, h // s, w // s, c), dtype=np.int64)
            for y in range(h // s):
                for xx in range(w // s):
                    block = x[:, y * s : y * s + s, xx * s : xx * s + s, :]
                    out[:, y, xx, :] = block.reshape(n, s * s, c).max(axis=1)
            x = out
        elif layer["kind"] == "conv":
            k, p = layer["k"], layer["p"]
            n, h, w, c = x.shape
            padded = np.zeros((n, h + 2 * p, w + 2 * p, c), dtype=np.int64)
            padded[:, p : p + h, p : p + w, :] = x
            ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
            out = np.zeros((n, ho, wo, layer["w"].shape[0]), dtype=np.int64)
            for y in range(ho):
                for xx in range(wo):
                    window = padded[:, y : y + k, xx : xx + k, :].reshape(n, -1)  # ky, kx, c
                    out[:, y, xx, :] = _requantize(layer, window @ layer["w"].T)
            x = out
        else:
            x = _requantize(layer, x.reshape(len(x), -1) @ layer["w"].T)
    # argmax, ties to the lowest index, written out.
    best = np.zeros(len(x), dtype=np.int64)
    for j in range(1, x.shape[1]):
        best = np.where(x[:, j] > x[np.arange(len(x)), best], j, best)
    return x, best
