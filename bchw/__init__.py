"""bchw: BinaryConnect networks to verified, multiplier-free FPGA hardware.

The stages, each a module: :mod:`bchw.data`, :mod:`bchw.nn` and :mod:`bchw.train` (PyTorch),
:mod:`bchw.export` (checkpoint to integer model), :mod:`bchw.intmodel` (the integer model and its
file format, the contract with the hardware), :mod:`bchw.reference` (bit-exact numpy reference)
and :mod:`bchw.evaluate`; :mod:`bchw.cli` is the ``bchw`` command.
"""

__version__ = "0.1.0"
