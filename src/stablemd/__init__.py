"""stablemd: make machine-learned interatomic potentials trustworthy in long molecular dynamics.

Units everywhere inside the package: energy eV, length Å, time fs, temperature K, mass amu.
Conversions happen only at file boundaries (see :mod:`stablemd.core.units`).
"""

__version__ = "0.1.0"
