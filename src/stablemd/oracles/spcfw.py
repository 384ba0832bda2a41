"""Flexible SPC/Fw water (Wu, Tepper & Voth, J. Chem. Phys. 124, 024503 (2006)) through OpenMM.

E = Σ_bonds (k_b/2)(r − r0)² + Σ_angles (k_θ/2)(θ − θ0)² + Coulomb + LJ(O–O), with the
intramolecular nonbonded pairs excluded. Periodic cells use PME with a cutoff of at most half the
smallest cell width and OpenMM's long-range dispersion correction; open systems use no cutoff.
Atoms must come as O, H, H per molecule; molecules split by periodic wrapping are made whole
(each H taken at the minimum image of its O) before OpenMM sees them. Results in eV, eV/Å and
eV/Å³ (ASE sign convention).
"""

from __future__ import annotations

import numpy as np
import openmm
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.cell import Cell
from ase.geometry import find_mic
from openmm import unit

from stablemd.core.errors import InputError
from stablemd.core.units import KCAL_PER_MOL_IN_EV, KJ_PER_MOL_IN_EV

#: SPC/Fw parameters in the paper's units (kcal/mol, Å, rad, e).
BOND_K_KCAL_PER_A2 = 1059.162
BOND_R0_A = 1.012
ANGLE_K_KCAL_PER_RAD2 = 75.90
ANGLE_THETA0_DEG = 113.24
CHARGE_O = -0.82
CHARGE_H = 0.41
SIGMA_OO_A = 3.165492
EPSILON_OO_KCAL = 0.1554253

_KCAL_IN_KJ = KCAL_PER_MOL_IN_EV / KJ_PER_MOL_IN_EV
_NM = 10.0  # Å per nm


def default_cutoff(cell: np.ndarray) -> float:
    """Nonbonded cutoff (Å): min(9 Å, half the smallest perpendicular cell width − 0.01 Å)."""
    volume = abs(np.linalg.det(cell))
    widths = [volume / np.linalg.norm(np.cross(cell[i - 2], cell[i - 1])) for i in range(3)]
    return min(9.0, 0.5 * min(widths) - 0.01)


def _check_water(atoms: Atoms) -> None:
    numbers = atoms.get_atomic_numbers()
    if len(numbers) % 3:
        raise InputError(f"openmm-spcfw: {len(numbers)} atoms is not a whole number of waters")
    expected = np.tile([8, 1, 1], len(numbers) // 3)
    bad = np.flatnonzero(numbers != expected)
    if bad.size:
        raise InputError(
            f"openmm-spcfw: atom {bad[0]} has Z={numbers[bad[0]]} but water atoms must be "
            "ordered O,H,H per molecule"
        )
    if atoms.pbc.any() and not atoms.pbc.all():
        raise InputError(f"openmm-spcfw: pbc must be all True or all False, got {atoms.pbc}")


def whole_molecules(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """``positions`` (Å) with each H moved to the periodic image nearest its molecule's O."""
    waters = positions.reshape(-1, 3, 3)
    offsets = find_mic((waters[:, 1:] - waters[:, :1]).reshape(-1, 3), cell)[0]
    whole = waters.copy()
    whole[:, 1:] = waters[:, :1] + offsets.reshape(-1, 2, 3)
    return whole.reshape(-1, 3)


def build_system(n_molecules: int, cell: np.ndarray | None, cutoff: float, tolerance: float):
    """The OpenMM System of ``n_molecules`` SPC/Fw waters (``cell`` in Å, None when open)."""
    system = openmm.System()
    bonds = openmm.HarmonicBondForce()
    angles = openmm.HarmonicAngleForce()
    nonbonded = openmm.NonbondedForce()
    k_bond = BOND_K_KCAL_PER_A2 * _KCAL_IN_KJ * _NM**2  # kJ/mol/nm²
    k_angle = ANGLE_K_KCAL_PER_RAD2 * _KCAL_IN_KJ  # kJ/mol/rad²
    epsilon = EPSILON_OO_KCAL * _KCAL_IN_KJ
    for m in range(n_molecules):
        o, h1, h2 = 3 * m, 3 * m + 1, 3 * m + 2
        system.addParticle(15.999)
        system.addParticle(1.008)
        system.addParticle(1.008)
        nonbonded.addParticle(CHARGE_O, SIGMA_OO_A / _NM, epsilon)
        nonbonded.addParticle(CHARGE_H, 1.0, 0.0)
        nonbonded.addParticle(CHARGE_H, 1.0, 0.0)
        bonds.addBond(o, h1, BOND_R0_A / _NM, k_bond)
        bonds.addBond(o, h2, BOND_R0_A / _NM, k_bond)
        angles.addAngle(h1, o, h2, np.deg2rad(ANGLE_THETA0_DEG), k_angle)
        for i, j in ((o, h1), (o, h2), (h1, h2)):
            nonbonded.addException(i, j, 0.0, 1.0, 0.0)
    if cell is None:
        nonbonded.setNonbondedMethod(openmm.NonbondedForce.NoCutoff)
    else:
        system.setDefaultPeriodicBoxVectors(*(openmm.Vec3(*row / _NM) for row in cell))
        nonbonded.setNonbondedMethod(openmm.NonbondedForce.PME)
        nonbonded.setCutoffDistance(cutoff / _NM)
        nonbonded.setEwaldErrorTolerance(tolerance)
        nonbonded.setUseDispersionCorrection(True)
    for force in (bonds, angles, nonbonded):
        system.addForce(force)
    return system


class SPCFwCalculator(Calculator):
    """ASE calculator for SPC/Fw water evaluated by OpenMM (double precision by default).

    Parameters: ``cutoff`` (Å, default :func:`default_cutoff`), ``ewald_tolerance`` (PME
    relative error), ``platform`` ("Reference": double precision; "CPU": faster, single),
    ``stress_strain`` (strain step of the central finite differences that give the stress).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]
    default_parameters = {
        "cutoff": None,
        "ewald_tolerance": 1e-5,
        "platform": "Reference",
        "stress_strain": 1e-5,
    }

    def __init__(self, **kwargs):
        unknown = sorted(set(kwargs) - set(self.default_parameters))
        if unknown:
            raise TypeError(f"unknown SPC/Fw parameter {unknown[0]!r}")
        super().__init__(**kwargs)
        self._context = None
        self._key = None

    def _ensure_context(self, atoms: Atoms) -> None:
        periodic = bool(atoms.pbc.all())
        cell = np.asarray(atoms.cell) if periodic else None
        key = (tuple(atoms.numbers), periodic, None if cell is None else cell.tobytes())
        if key == self._key:
            return
        _check_water(atoms)
        cutoff = self.parameters.cutoff
        if periodic:
            cutoff = default_cutoff(cell) if cutoff is None else cutoff
            if cutoff > default_cutoff(cell) + 0.01:
                raise InputError(f"openmm-spcfw: cutoff {cutoff} Å exceeds half the cell width")
        cell = None if cell is None else Cell(cell).standard_form()[0]
        system = build_system(len(atoms) // 3, cell, cutoff, self.parameters.ewald_tolerance)
        try:
            platform = openmm.Platform.getPlatformByName(self.parameters.platform)
        except openmm.OpenMMException:
            raise InputError(
                f"openmm-spcfw: no OpenMM platform {self.parameters.platform!r}"
            ) from None
        self._context = openmm.Context(system, openmm.VerletIntegrator(0.001), platform)
        self._key = key

    def _evaluate(self, positions: np.ndarray, cell: np.ndarray | None, forces: bool):
        """Energy (eV) and optionally forces (eV/Å) at ``positions`` in ``cell`` (Å)."""
        if cell is not None:  # OpenMM wants the lower-triangular (reduced) cell
            positions = whole_molecules(positions, cell)
            cell, rotation = Cell(cell).standard_form()
            positions = positions @ rotation.T
            self._context.setPeriodicBoxVectors(*(openmm.Vec3(*row / _NM) for row in cell))
        self._context.setPositions(positions / _NM)
        state = self._context.getState(getEnergy=True, getForces=forces)
        energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        energy *= KJ_PER_MOL_IN_EV
        if not forces:
            return energy, None
        f = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        f = f * (KJ_PER_MOL_IN_EV / _NM)
        return energy, f @ rotation if cell is not None else f

    def _stress(self, atoms: Atoms) -> np.ndarray:
        """Voigt stress (eV/Å³) = (1/V) ∂E/∂ε by central differences of homogeneous strain, at
        the cutoff and PME grid of the unstrained cell."""
        cell = np.asarray(atoms.cell)
        step = self.parameters.stress_strain
        stress = np.zeros((3, 3))
        for i in range(3):
            for j in range(i, 3):
                diff = 0.0
                for sign in (1, -1):
                    strain = np.eye(3)
                    strain[i, j] += sign * step / (1 if i == j else 2)
                    strain[j, i] = strain[i, j]
                    energy, _ = self._evaluate(atoms.positions @ strain, cell @ strain, False)
                    diff += sign * energy
                stress[i, j] = stress[j, i] = diff / (2 * step * atoms.get_volume())
        return stress.flat[[0, 4, 8, 5, 2, 1]]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        self._ensure_context(atoms)
        cell = np.asarray(atoms.cell) if atoms.pbc.all() else None
        if "energy" not in self.results or "forces" not in self.results:
            energy, forces = self._evaluate(atoms.positions, cell, True)
            self.results.update(energy=energy, free_energy=energy, forces=forces)
        if "stress" in properties:
            if cell is None:
                raise PropertyNotImplementedError("openmm-spcfw: stress needs a periodic cell")
            self.results["stress"] = self._stress(atoms)
