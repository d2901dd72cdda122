"""The chips bchw folds for, places and routes on, or estimates for: one table.

Each :class:`Device` says what the chip holds (LUTs, flip-flops, block RAMs with their size,
other memory, DSP blocks), the clock bchw's designs are built to close timing at on it, and
how nextpnr places on it (``None``: synthesis estimates only, as for Xilinx parts, which no
open tool places here). ``--fit DEVICE`` (:mod:`bchw.estimate.fit`), ``--pnr`` and ``--device``
read it; docs/estimates.md prints it (a test keeps the two equal). Figures are the vendors'
data sheets (../shared/REFERENCES.md), flip-flops one per LUT4 on Lattice parts and two per
LUT6 on 7-series.
"""

from __future__ import annotations

from dataclasses import dataclass

from bchw.errors import BchwError

# The fraction of a chip's LUTs and flip-flops --fit leaves free (for placement and routing,
# and the analytical model's error); here, light, for --help.
DEFAULT_MARGIN = 0.15


@dataclass(frozen=True)
class Device:
    """A part, by the name ``--fit`` takes (``ecp5-85k``)."""

    key: str
    family: str  # the synthesis family: ice40, ecp5 or xc7
    name: str  # the vendor's part name
    lut: int
    ff: int
    bram: int  # block RAMs, in blocks of bram_kbit
    bram_kbit: int
    dsp: int
    dsp_kind: str
    other_memory: str
    clock_mhz: float  # the clock generated designs are built to close timing at
    flags: tuple[str, ...] | None  # nextpnr's device options; None: no place and route here

    @property
    def capacity(self) -> dict[str, int]:
        return {"lut": self.lut, "ff": self.ff, "bram": self.bram, "dsp": self.dsp}

    @property
    def placeable(self) -> bool:
        return self.flags is not None

    @property
    def lut_inputs(self) -> int:
        return 6 if self.family == "xc7" else 4


DEVICE_TABLE: tuple[Device, ...] = (
    Device(
        "ice40-up5k", "ice40", "iCE40UP5K", 5280, 5280, 30, 4, 8, "SB_MAC16 (16x16)",
        "4 x 256 kbit SPRAM (not used: it has no initial contents for weights)",
        40.0, ("--up5k", "--package", "sg48"),
    ),
    Device(
        "ice40-hx8k", "ice40", "iCE40HX8K", 7680, 7680, 32, 4, 0, "-", "-",
        40.0, ("--hx8k", "--package", "ct256"),
    ),
    Device(
        "ice40-u4k", "ice40", "iCE5LP4K", 3520, 3520, 20, 4, 4, "SB_MAC16 (16x16)", "-",
        40.0, ("--u4k", "--package", "sg48"),
    ),
    Device(
        "ecp5-25k", "ecp5", "LFE5U-25F", 24288, 24288, 56, 18, 28, "MULT18X18D",
        "distributed RAM (LUTs as 16x4 RAM)", 100.0, ("--25k",),
    ),
    Device(
        "ecp5-45k", "ecp5", "LFE5U-45F", 43848, 43848, 108, 18, 72, "MULT18X18D",
        "distributed RAM (LUTs as 16x4 RAM)", 100.0, ("--45k",),
    ),
    Device(
        "ecp5-85k", "ecp5", "LFE5U-85F", 83640, 83640, 208, 18, 156, "MULT18X18D",
        "distributed RAM (LUTs as 16x4 RAM)", 100.0, ("--85k",),
    ),
    Device(
        "xc7a35t", "xc7", "XC7A35T", 20800, 41600, 50, 36, 90, "DSP48E1 (25x18)",
        "LUT RAM (SLICEM LUTs)", 100.0, None,
    ),
    Device(
        "xc7a100t", "xc7", "XC7A100T", 63400, 126800, 135, 36, 240, "DSP48E1 (25x18)",
        "LUT RAM (SLICEM LUTs)", 100.0, None,
    ),
    Device(
        "xc7z020", "xc7", "XC7Z020", 53200, 106400, 140, 36, 220, "DSP48E1 (25x18)",
        "LUT RAM (SLICEM LUTs)", 100.0, None,
    ),
)  # fmt: skip
DEVICES_BY_KEY = {d.key: d for d in DEVICE_TABLE}
# Block RAM shapes (depth x width) per family, as the docs' table prints them.
BRAM_GEOMETRY = {
    "ice40": "256x16, 512x8, 1024x4, 2048x2",
    "ecp5": "512x36, 1024x18, 2048x9, 4096x4, 8192x2, 16384x1",
    "xc7": "RAMB36: 512x72 .. 32768x1; RAMB18 halves: 512x36 .. 16384x1",
}


def fit_device(key: str) -> Device:
    """The device ``--fit`` names, or a one-line error listing the known ones."""
    try:
        return DEVICES_BY_KEY[key]
    except KeyError:
        known = ", ".join(DEVICES_BY_KEY)
        raise BchwError(f"unknown device {key!r} for --fit: choose one of {known}") from None


def devices_markdown() -> list[str]:
    """The table as docs/estimates.md prints it."""
    lines = [
        "| `--fit` | part | LUTs | flip-flops | block RAM | block RAM shapes | other memory "
        "| DSP blocks | clock target | place and route |",
        "|---|---|---:|---:|---|---|---|---|---:|---|",
    ]
    for d in DEVICE_TABLE:
        dsp = f"{d.dsp} {d.dsp_kind}" if d.dsp else "0"
        pnr = "nextpnr" if d.placeable else "synthesis only"
        lines.append(
            f"| `{d.key}` | {d.name} | {d.lut:,} LUT{d.lut_inputs} | {d.ff:,} "
            f"| {d.bram} x {d.bram_kbit} kbit | {BRAM_GEOMETRY[d.family]} | {d.other_memory} "
            f"| {dsp} | {d.clock_mhz:g} MHz | {pnr} |"
        )
    return lines
