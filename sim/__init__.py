"""cocotb testbenches, stream drivers and the simulator runner for cosimulating generated Verilog.

The testbenches compare the emitted Verilog with :mod:`bchw.reference` bit for bit. They arrive
with the cosimulation work.
"""
