"""An implementation of docs/integer-model.md written from the page alone.

It shares no code with bchw: it parses the file with struct and json, unpacks bits by hand,
accumulates in int64 with a matrix product of integers, and requantizes with multiplication and
floor division instead of shifts. Tests compare it with bchw's reference.
"""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np


def parse(data: bytes) -> dict:
    assert data[:8] == b"BCHWIM\r\n"
    (header_len,) = struct.unpack("<I", data[8:12])
    header = json.loads(data[12 : 12 + header_len])
    assert hashlib.sha256(data[:-32]).digest() == data[-32:]
    payload = data[12 + header_len : -32]
    layers = []
    for lh in header["layers"]:
        arrays = {}
        for name, desc in lh["arrays"].items():
            raw = payload[desc["offset"] : desc["offset"] + desc["nbytes"]]
            arrays[name] = np.frombuffer(raw, dtype=np.dtype(desc["dtype"])).reshape(desc["shape"])
        n_in = lh["in_features"]
        packed = arrays["weights"].astype(np.int64)
        i = np.arange(n_in)
        bits = (packed[:, i // 8] >> (i % 8)) & 1
        layers.append(
            {
                "w": 2 * bits - 1,
                "s": arrays["scale_sign"].astype(np.int64),
                "h": arrays["scale_shift"].astype(np.int64),
                "o": arrays["offset"].astype(np.int64),
                "R": lh["requant_shift"],
                "bits": lh["output_bits"],
                "signed": lh["output_signed"],
            }
        )
    return {"header": header, "layers": layers}


def run(data: bytes, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model = parse(data)
    x = np.asarray(images, dtype=np.int64)
    for layer in model["layers"]:
        acc = x @ layer["w"].T
        gain = (layer["s"] * 2 ** layer["h"]).sum(axis=1)
        rho = 2 ** (layer["R"] - 1) if layer["R"] > 0 else 0
        v = (acc * gain + layer["o"] + rho) // 2 ** layer["R"]
        b = layer["bits"]
        lo, hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if layer["signed"] else (0, 2**b - 1)
        x = np.minimum(np.maximum(v, lo), hi)
    # argmax, ties to the lowest index, written out.
    best = np.zeros(len(x), dtype=np.int64)
    for j in range(1, x.shape[1]):
        best = np.where(x[:, j] > x[np.arange(len(x)), best], j, best)
    return x, best
