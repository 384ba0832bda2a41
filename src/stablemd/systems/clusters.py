"""Metal clusters with adsorbates: the systems of surface chemistry in the gas phase.

``pd13-h2``: a Pd₁₃ icosahedron with two H₂ molecules, the kind of system of the Dynamic
Training paper (H₂ on a Pd cluster; theirs sits in a graphene vacancy, ours is free so that
GFN2-xTB labels it in about 0.5 s a call on one core). The structure is built once by
:func:`build_pd13_h2` and shipped relaxed as ``geometries/pd13-h2.xyz``, so that loading it
needs no xTB: the two molecules start side-on, 2 Å above opposite vertices of the icosahedron (their
bonds perpendicular to the axis through the vertices, turned 30° from each other so that no
symmetry pins the relaxation), and GFN2-xTB LBFGS (fmax 0.02 eV/Å) relaxes the whole cluster.
"""

from __future__ import annotations

import ase.io
import numpy as np
from ase import Atoms
from ase.cluster import Icosahedron
from ase.optimize import LBFGS

from stablemd.systems.molecules import geometry_path

#: H–H distance of the molecules placed before relaxation, Å (gas-phase H₂).
H2_BOND_A = 0.74
#: Height of each molecule's centre above the vertex it faces, before relaxation, Å.
ADSORPTION_HEIGHT_A = 2.0
FMAX_EV_PER_A = 0.02


def unrelaxed_pd13_h2() -> Atoms:
    """Pd₁₃ icosahedron (ASE's bulk-like spacing) with a side-on H₂ above two opposite
    vertices, Å."""
    cluster = Icosahedron("Pd", noshells=2)
    positions = cluster.positions - cluster.positions.mean(axis=0)
    vertex = positions[np.argmax(np.linalg.norm(positions, axis=1))]
    axis = vertex / np.linalg.norm(vertex)
    across = np.cross(axis, [0.0, 1.0, 0.0] if abs(axis[1]) < 0.9 else [1.0, 0.0, 0.0])
    across /= np.linalg.norm(across)
    hydrogens = []
    for sign, turn in ((1.0, 0.0), (-1.0, np.pi / 6)):
        bond = np.cos(turn) * across + np.sin(turn) * np.cross(axis, across)
        centre = sign * (vertex + ADSORPTION_HEIGHT_A * axis)
        hydrogens += [centre - 0.5 * H2_BOND_A * bond, centre + 0.5 * H2_BOND_A * bond]
    return Atoms("Pd13H4", positions=np.vstack([positions, hydrogens]))


def build_pd13_h2() -> Atoms:
    """:func:`unrelaxed_pd13_h2` relaxed with GFN2-xTB (LBFGS, fmax 0.02 eV/Å)."""
    from stablemd.oracles import get_oracle

    atoms = unrelaxed_pd13_h2()
    atoms.calc = get_oracle("xtb")
    LBFGS(atoms, logfile=None).run(fmax=FMAX_EV_PER_A, steps=2000)
    atoms.info.update(xtb_energy_eV=atoms.get_potential_energy())
    atoms.calc = None
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


def load_cluster(name: str) -> Atoms:
    """The shipped relaxed geometry of cluster ``name`` (Å)."""
    with geometry_path(name).open() as handle:
        return ase.io.read(handle, format="extxyz")


if __name__ == "__main__":
    relaxed = build_pd13_h2()
    ase.io.write(str(geometry_path("pd13-h2")), relaxed, format="extxyz")
    print("pd13-h2", len(relaxed), "atoms", relaxed.info["xtb_energy_eV"], "eV")
