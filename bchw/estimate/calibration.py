"""The designs the analytical model is fitted on and checked against.

``benchmarks/calibrate_estimates.py`` synthesizes them with Yosys for every family,
``benchmarks/fit_estimates.py`` fits the per-primitive costs (``coefficients.json``) on the
"fit" designs and measures the error on the "check" designs.
"""

from __future__ import annotations

from typing import Any

from bchw.core.intmodel import IntegerModel
from bchw.core.synthetic import random_model
from rtl_gen import DEFAULT_ADDER_TREE
from rtl_gen.baseline import mac_model
from rtl_gen.plan import DesignPlan, DotProduct, LayerFolding, plan_design

# Designs that fit (role "fit") and check (role "check") the analytical model: synthetic models
# of varied shapes, foldings (unrolled, folded, FIFO and vector-buffer links), activation widths,
# scale terms and MAC weight widths, each small enough to synthesize in well under a minute.
CALIBRATION_DESIGNS: list[dict[str, Any]] = [
    {"name": "c01", "role": "fit", "sizes": [64, 32, 10], "act": 8, "pe": [4, 2], "simd": [16, 4]},
    {
        "name": "c02",
        "role": "check",
        "sizes": [32, 16, 8],
        "act": 8,
        "pe": [16, 8],
        "simd": [32, 16],
    },
    {"name": "c03", "role": "fit", "sizes": [128, 64, 10], "act": 8, "pe": [8, 2], "simd": [16, 8]},
    {
        "name": "c04",
        "role": "check",
        "sizes": [100, 50, 10],
        "act": 6,
        "pe": [5, 3],
        "simd": [20, 10],
    },
    {
        "name": "c05",
        "role": "fit",
        "sizes": [64, 64, 64, 10],
        "act": 8,
        "pe": [8, 8, 2],
        "simd": [8, 8, 8],
    },
    {
        "name": "c06",
        "role": "check",
        "sizes": [256, 32, 10],
        "act": 4,
        "terms": 1,
        "pe": [2, 10],
        "simd": [64, 2],
    },
    {
        "name": "c07",
        "role": "fit",
        "sizes": [48, 24, 10],
        "act": 8,
        "terms": 3,
        "pe": [24, 5],
        "simd": [48, 8],
    },
    {
        "name": "c08",
        "role": "check",
        "sizes": [64, 32, 10],
        "act": 4,
        "pe": [8, 2],
        "simd": [8, 8],
        "bits": 4,
    },
    {
        "name": "c10",
        "role": "check",
        "sizes": [64, 48, 10],
        "act": 8,
        "pe": [4, 4],
        "simd": [32, 4],
        "pipe": 1,
    },
    {
        "name": "c11",
        "role": "fit",
        "sizes": [16, 16, 10],
        "act": 6,
        "pe": [16, 10],
        "simd": [16, 16],
    },
    # Few PEs with many synapses each (the shipped digits model's last layer, 1 x 32, is one).
    {"name": "c12", "role": "fit", "sizes": [128, 32, 10], "act": 6, "pe": [2, 4], "simd": [32, 8]},
    # As large as the designs --fit chooses for the bigger chips (30k LUTs and more): their
    # trees are long carry chains, which the small designs above barely show. Binary only
    # where the MAC baseline at the same folding (thousands of multipliers) would take hours
    # to synthesize in LUTs; two MAC designs of a few hundred multipliers instead.
    {
        "name": "c13",
        "role": "fit",
        "sizes": [512, 512, 512, 10],
        "act": 8,
        "pe": [32, 32, 2],
        "simd": [64, 32, 32],
        "kinds": ["binary"],
    },
    {
        "name": "c14",
        "role": "check",
        "sizes": [784, 256, 256, 10],
        "act": 8,
        "pe": [16, 64, 2],
        "simd": [128, 16, 64],
        "kinds": ["binary"],
    },
    {
        "name": "c15",
        "role": "fit",
        "sizes": [256, 256, 10],
        "act": 8,
        "pe": [16, 2],
        "simd": [16, 16],
    },
    {
        "name": "c16",
        "role": "check",
        "sizes": [384, 128, 10],
        "act": 8,
        "pe": [8, 2],
        "simd": [32, 8],
    },
]


def calibration_design(spec: dict[str, Any]) -> tuple[IntegerModel, list[LayerFolding]]:
    """The synthetic model and folding a calibration spec describes."""
    model = random_model(
        spec["sizes"],
        seed=int(spec["name"][1:]),
        input_bits=8,
        act_bits=spec["act"],
        out_bits=spec["act"],
        terms=spec.get("terms", 2),
    )
    folding = [LayerFolding(p, s) for p, s in zip(spec["pe"], spec["simd"], strict=True)]
    return model, folding


def calibration_plans(
    spec: dict[str, Any], adder_tree: str = DEFAULT_ADDER_TREE
) -> dict[str, DesignPlan]:
    """The binary design of a calibration spec (its folded trees ``adder_tree``) and its MAC
    baseline (``bits``-bit weights, 8 unless the spec says; none where ``kinds`` leaves it
    out), at the spec's folding and pipelining."""
    model, folding = calibration_design(spec)
    bits, pipe = spec.get("bits", 8), spec.get("pipe", 2)
    plans = {"binary": plan_design(model, folding, pipe, DotProduct.binary(adder_tree))}
    if "mac" in spec.get("kinds", ["binary", "mac"]):
        plans["mac"] = plan_design(mac_model(model, bits), folding, pipe, DotProduct.mac(bits))
    return plans
