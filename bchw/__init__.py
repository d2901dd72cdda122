"""bchw: BinaryConnect networks to verified, multiplier-free FPGA hardware.

The layers, each importing only those below it (``lint-imports`` checks the contracts in
pyproject.toml):

- :mod:`bchw.cli`: the ``bchw`` command, one module per command;
- :mod:`bchw.demo`: the whole chain on a shipped model (``bchw demo``);
- :mod:`bchw.estimate`: resources against a multiply-accumulate design (Yosys, nextpnr, the
  analytical model);
- :mod:`sim`: cosimulation of the generated Verilog against the reference (cocotb);
- :mod:`rtl_gen`: the design plan, the manifest and the Amaranth generators;
- :mod:`bchw.models`: the shipped integer models (package data);
- :mod:`bchw.core`: data, training, export, the integer model (the contract between software
  and hardware) and its bit-exact reference;
- :mod:`bchw.errors`, :mod:`bchw.outputs`: the one-line error and safe output files.
"""

__version__ = "0.1.0"
