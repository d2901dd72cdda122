"""bchw: BinaryConnect networks to verified, multiplier-free FPGA hardware.

The stages, each a module: :mod:`bchw.core.data`, :mod:`bchw.core.nn` and :mod:`bchw.core.train` (PyTorch),
:mod:`bchw.core.export` (checkpoint to integer model), :mod:`bchw.core.intmodel` (the integer model and its
file format, the contract with the hardware), :mod:`bchw.core.reference` (bit-exact numpy reference)
and :mod:`bchw.core.evaluate`; :mod:`bchw.cli` is the ``bchw`` command.
"""

__version__ = "0.1.0"
