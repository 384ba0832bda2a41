"""Physical constants and the unit conversions used at file boundaries.

Inside stablemd: energy eV, length Å, time fs, temperature K, mass amu.
"""

from ase import units as _ase

#: Boltzmann constant in eV/K.
KB_EV_PER_K = 8.617333262e-5
#: One kcal/mol in eV.
KCAL_PER_MOL_IN_EV = _ase.kcal / _ase.mol
#: One kJ/mol in eV.
KJ_PER_MOL_IN_EV = _ase.kJ / _ase.mol
#: One hartree in eV.
HARTREE_IN_EV = _ase.Hartree
#: One femtosecond in ASE's internal time unit (ASE time = Å·sqrt(amu/eV)).
FS_IN_ASE_TIME = _ase.fs

#: Energy units accepted at file boundaries, as their size in eV.
ENERGY_UNITS_IN_EV = {
    "eV": 1.0,
    "kcal/mol": KCAL_PER_MOL_IN_EV,
    "kJ/mol": KJ_PER_MOL_IN_EV,
    "hartree": HARTREE_IN_EV,
}
