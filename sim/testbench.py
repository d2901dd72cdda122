"""cocotb testbench: stream images through the harness and compare every output bit for bit.

Run by :mod:`sim.runner` (never by pytest directly), configured through the JSON file named by
``BCHW_COSIM_CONFIG``. The harness (:mod:`sim.harness`) moves the beats; this module polls its
counters every ``poll_cycles`` cycles, reads the new handshake log lines, checks each output
payload against the expected one and watches for a stream that stops. When all outputs have
arrived it runs ``tail_cycles`` more to catch duplicated beats, writes ``result_file`` and fails
the test on any mismatch, missing or extra output.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer

from sim.checker import StreamChecker

CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4


def _load_config() -> dict[str, Any]:
    return json.loads(Path(os.environ["BCHW_COSIM_CONFIG"]).read_text(encoding="utf-8"))


def _write_json(path: str, document: dict[str, Any]) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(document), encoding="utf-8")
    tmp.replace(path)


@cocotb.test()
async def stream_and_compare(dut) -> None:
    config = _load_config()
    checker = StreamChecker.from_config(config)
    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, RESET_CYCLES)
    dut.rst.value = 0

    poll = config["poll_cycles"]
    idle = 0
    stopped = False
    ended_early = False
    while checker.outputs < checker.images:
        await Timer(poll * CLOCK_PERIOD_NS, unit="ns")
        before = checker.outputs
        checker.read_log()
        cycle = int(dut.cycle.value)
        _write_json(config["progress_file"], checker.progress(cycle))
        if config.get("stop_at_first_mismatch") and checker.mismatches:
            ended_early = True
            break
        if cycle >= config.get("end_cycle", cycle + 1):
            ended_early = True
            break
        idle = idle + poll if checker.outputs == before else 0
        if idle >= config["patience_cycles"]:
            stopped = True
            break
    if not stopped and not ended_early:
        await Timer(config["tail_cycles"] * CLOCK_PERIOD_NS, unit="ns")
        checker.read_log()
    cycle = int(dut.cycle.value)
    result = checker.result(
        cycle=cycle,
        stalled=stopped,
        beats_taken=int(dut.beats_taken.value),
        ended_early=ended_early,
    )
    result["gap_cycles"] = int(dut.gap_cycles.value)
    result["backpressure_cycles"] = int(dut.backpressure_cycles.value)
    result["input_refused_cycles"] = int(dut.input_refused_cycles.value)
    _write_json(config["result_file"], result)
    assert result["passed"], result["summary"]
