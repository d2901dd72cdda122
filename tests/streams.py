"""Stream drivers for amaranth.sim testbenches: random input gaps and output back-pressure."""

from __future__ import annotations

import random

from bchw.core.synthetic import random_layer, random_model  # noqa: F401 (used by the tests)


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


def beats_of(vectors, lanes, fill=0):
    """Split each vector into beats of ``lanes`` values; the last beat is padded with ``fill``."""
    beats = []
    for vector in vectors:
        values = [int(v) for v in vector]
        count = -(-len(values) // lanes)
        values += [fill] * (count * lanes - len(values))
        beats += [values[k * lanes : (k + 1) * lanes] for k in range(count)]
    return beats


def generate_design(model, folding, folder, pipeline_every=2, unit=None):
    """Plan and generate ``model``'s design (an MLP's or a CNN's) at ``folding`` (``(pe,
    simd)`` pairs or ``LayerFolding``) into ``folder``; ``unit`` the dot-product unit (binary by
    default)."""
    from rtl_gen.conv_plan import plan_network
    from rtl_gen.generate import generate
    from rtl_gen.plan import BINARY, LayerFolding

    folding = [f if isinstance(f, LayerFolding) else LayerFolding(*f) for f in folding]
    return generate(plan_network(model, folding, pipeline_every, unit or BINARY), folder)


def mac_unit(model):
    """The MAC dot-product unit for a model made by ``mac_model``."""
    from rtl_gen.plan import DotProduct

    return DotProduct.mac(model.layers[0].weight_bits)


def elaborate(component):
    """Elaborate ``component`` and its blocks, as generating Verilog would (a test that only
    reads a built circuit's numbers must still use it, or Amaranth warns it went unused)."""
    from amaranth.hdl import Fragment

    Fragment.get(component, None)
    return component
