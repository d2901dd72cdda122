"""Cosimulation of generated Verilog under cocotb, bit for bit against :mod:`bchw.core.reference`.

- :mod:`sim.harness`: the Verilog harness that streams beats from a file into the design with
  pseudo-random gaps and back-pressure and logs every handshake (per-beat work stays in HDL);
- :mod:`sim.testbench`: the cocotb test (clock, reset, polling, comparison); never run directly;
- :mod:`sim.checker`: the comparison of the handshake log with the expected payloads;
- :mod:`sim.runner`: builds (cached by content) and runs with ``cocotb_tools.runner``;
- :mod:`sim.stimuli`: corner, random and directed (tie, saturation) input vectors;
- :mod:`sim.cosim`: ``bchw cosim`` as a function, with the report and waveform replay;
- :mod:`sim.selfcheck`: fault injection (:mod:`rtl_gen.faults`) and the kill rate.
"""
