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
