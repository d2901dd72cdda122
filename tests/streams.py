"""Stream drivers for amaranth.sim testbenches: random input gaps and output back-pressure."""

from __future__ import annotations

import random


async def drive_and_collect(
    ctx, i, o, beats, n_out, *, seed=0, gap=0.0, stall=0.0, max_cycles=200_000
):
    """Send ``beats`` (payload values) on ``i`` and collect ``n_out`` payloads from ``o``.

    ``gap``: probability of withholding ``valid`` on a cycle; ``stall``: probability of
    withholding ``ready``. Returns ``(outputs, output_cycles, input_cycles)``: a beat moves at a
    clock edge where valid and ready are both high; cycles count from the first edge.
    """
    rng = random.Random(seed)
    outputs, out_cycles, in_cycles = [], [], []
    sent = 0
    cycle = 0
    while len(outputs) < n_out:
        offering = sent < len(beats) and rng.random() >= gap
        ctx.set(i.valid, int(offering))
        if offering:
            ctx.set(i.payload, beats[sent])
        ctx.set(o.ready, int(rng.random() >= stall))
        _, _, iv, ir, ov, orr, payload = await ctx.tick().sample(
            i.valid, i.ready, o.valid, o.ready, o.payload
        )
        if iv and ir:
            sent += 1
            in_cycles.append(cycle)
        if ov and orr:
            outputs.append(payload)
            out_cycles.append(cycle)
        cycle += 1
        if cycle > max_cycles:
            raise AssertionError(f"timeout: {len(outputs)} of {n_out} outputs after {cycle} cycles")
    ctx.set(i.valid, 0)
    return outputs, out_cycles, in_cycles


def simulate(dut, beats, n_out, *, seed=0, gap=0.0, stall=0.0):
    """Run ``dut`` (a component with stream ports ``i`` and ``o``) in amaranth.sim."""
    import sys

    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator

    # Wide memory words and masks print as integers of thousands of digits in pysim's code.
    sys.set_int_max_str_digits(0)
    result = {}

    async def testbench(ctx):
        result["run"] = await drive_and_collect(
            ctx, dut.i, dut.o, beats, n_out, seed=seed, gap=gap, stall=stall
        )

    # A purely combinational block has no clock domain; give the testbench one to count cycles.
    top = Module()
    top.submodules.dut = dut
    heartbeat = Signal()
    top.d.sync += heartbeat.eq(~heartbeat)
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return result["run"]


def random_layer(n_in, n_out, in_bits, out_bits, last, seed, terms=2, max_shift=6):
    """An IntegerLayer with random weights and requantization constants."""
    import numpy as np

    from bchw.intmodel import IntegerLayer

    rng = np.random.default_rng(seed)
    sign = rng.integers(-1, 2, size=(n_out, terms)).astype(np.int8)
    shift = np.where(sign != 0, rng.integers(0, max_shift + 1, size=(n_out, terms)), 0)
    bound = n_in * ((1 << in_bits) - 1)
    return IntegerLayer(
        weights=rng.choice(np.array([-1, 1], np.int8), size=(n_out, n_in)),
        scale_sign=sign,
        scale_shift=shift.astype(np.int64),
        offset=rng.integers(-bound * 4, bound * 4 + 1, size=n_out).astype(np.int64),
        requant_shift=int(rng.integers(0, max_shift + 2)),
        input_bits=in_bits,
        output_bits=out_bits,
        activation="none" if last else "relu",
        output_frac_bits=0,
    )


def beats_of(vectors, lanes, fill=0):
    """Split each vector into beats of ``lanes`` values; the last beat is padded with ``fill``."""
    beats = []
    for vector in vectors:
        values = [int(v) for v in vector]
        count = -(-len(values) // lanes)
        values += [fill] * (count * lanes - len(values))
        beats += [values[k * lanes : (k + 1) * lanes] for k in range(count)]
    return beats


def random_model(sizes, seed, input_bits=8, act_bits=4, out_bits=6):
    """An IntegerModel of random layers with the given sizes (input, hidden..., classes)."""
    from bchw.intmodel import IntegerModel

    layers = []
    bits = input_bits
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = k == len(sizes) - 2
        layers.append(
            random_layer(
                n_in, n_out, bits, out_bits if last else act_bits, last, seed=seed * 31 + k
            )
        )
        bits = act_bits
    return IntegerModel(
        input_size=sizes[0], input_bits=input_bits, input_scale=1.0, layers=tuple(layers)
    )
