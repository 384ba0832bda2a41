"""Isolated molecules: built from SMILES with RDKit, relaxed with GFN2-xTB, shipped as files.

The relaxed geometries live in ``geometries/<name>.xyz`` inside the package, so that every
installation starts from the same structure whatever its RDKit version, and loading a system
needs neither RDKit nor xTB. ``python -m stablemd.systems.molecules`` regenerates them with
:func:`build_molecule`: ETKDG conformers (fixed seed) → lowest MMFF94 energy → GFN2-xTB LBFGS
to fmax 0.01 eV/Å. Atom order: heavy atoms in SMILES order, each followed by its hydrogens.
"""

from __future__ import annotations

from importlib.resources import files

import ase.io
import numpy as np
from ase import Atoms
from ase.optimize import LBFGS

from stablemd.core.errors import InputError

#: name → (SMILES, named dihedrals in the atom order above).
MOLECULES: dict[str, tuple[str, dict[str, tuple[int, int, int, int]]]] = {
    "ethanol": ("CCO", {}),
    "aspirin": ("CC(=O)Oc1ccccc1C(=O)O", {}),
    # L-alanine capped by acetyl and N-methyl (Ace-Ala-NMe); phi = C-N-CA-C, psi = N-CA-C-N.
    "alanine-dipeptide": ("CC(=O)N[C@@H](C)C(=O)NC", {"phi": (4, 6, 8, 14), "psi": (6, 8, 14, 16)}),
}
FMAX_EV_PER_A = 0.01
RELAX_MAX_STEPS = 1000


def _molecule_with_hydrogens(smiles: str):
    from rdkit import Chem

    parsed = Chem.MolFromSmiles(smiles)
    if parsed is None:
        raise InputError(f"--smiles {smiles!r}: RDKit cannot read this SMILES")
    return Chem.AddHs(parsed)


def _hydrogen_order(mol) -> list[int]:
    """RDKit atom indices with each heavy atom followed by its hydrogens (the systems' order)."""
    order = []
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() > 1:
            hydrogens = [n.GetIdx() for n in atom.GetNeighbors() if n.GetAtomicNum() == 1]
            order += [atom.GetIdx(), *sorted(hydrogens)]
    return order


def smiles_graph(smiles: str) -> tuple[list[int], np.ndarray]:
    """Atomic numbers and bonds (i < j, sorted) of ``smiles`` with hydrogens, in the atom order
    of :func:`embed`."""
    mol = _molecule_with_hydrogens(smiles)
    order = _hydrogen_order(mol)
    position = {rdkit_index: k for k, rdkit_index in enumerate(order)}
    bonds = sorted(
        tuple(sorted((position[b.GetBeginAtomIdx()], position[b.GetEndAtomIdx()])))
        for b in mol.GetBonds()
    )
    numbers = [mol.GetAtomWithIdx(i).GetAtomicNum() for i in order]
    return numbers, np.asarray(bonds, dtype=int).reshape(-1, 2)


def embed(smiles: str, seed: int = 0, n_conformers: int = 10) -> Atoms:
    """The lowest-MMFF94 ETKDG conformer of ``smiles`` with hydrogens (Å), atoms reordered so
    that each heavy atom is followed by its hydrogens."""
    from rdkit.Chem import AllChem

    mol = _molecule_with_hydrogens(smiles)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    conformers = list(AllChem.EmbedMultipleConfs(mol, n_conformers, params))
    if not conformers:
        raise InputError(f"--smiles {smiles!r}: RDKit found no 3D embedding")
    energies = [e for _, e in AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)]
    positions = mol.GetConformer(conformers[int(np.argmin(energies))]).GetPositions()
    order = _hydrogen_order(mol)
    numbers = [mol.GetAtomWithIdx(i).GetAtomicNum() for i in order]
    atoms = Atoms(numbers=numbers, positions=positions[order])
    atoms.positions -= atoms.get_center_of_mass()
    return atoms


def relax(atoms: Atoms, oracle: str = "xtb", fmax: float = FMAX_EV_PER_A) -> Atoms:
    """``atoms`` relaxed with ``oracle`` (ASE's LBFGS to ``fmax`` eV/Å); records its energy.
    Refused when ``RELAX_MAX_STEPS`` steps do not reach ``fmax`` (no minimum to store)."""
    from stablemd.oracles import get_oracle

    atoms = atoms.copy()
    atoms.calc = get_oracle(oracle)
    if not LBFGS(atoms, logfile=None).run(fmax=fmax, steps=RELAX_MAX_STEPS):
        largest = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
        raise InputError(
            f"relaxation with {oracle}: {RELAX_MAX_STEPS} LBFGS steps left a force of "
            f"{largest:.3g} eV/Å, above {fmax:g} eV/Å; the structure found is no minimum"
        )
    atoms.info[f"{oracle}_energy_eV"] = atoms.get_potential_energy()
    atoms.calc = None
    return atoms


def build_molecule(name: str, seed: int = 0) -> Atoms:
    """Embed molecule ``name`` from its SMILES and relax it with GFN2-xTB (fmax 0.01 eV/Å)."""
    smiles, _ = MOLECULES[name]
    atoms = relax(embed(smiles, seed), "xtb")
    atoms.info.update(smiles=smiles, seed=seed)
    return atoms


def geometry_path(name: str):
    return files("stablemd.systems") / "geometries" / f"{name}.xyz"


def load_molecule(name: str) -> Atoms:
    """The shipped relaxed geometry of molecule ``name`` (Å)."""
    with geometry_path(name).open() as handle:
        return ase.io.read(handle, format="extxyz")


if __name__ == "__main__":
    for molecule in MOLECULES:
        relaxed = build_molecule(molecule)
        ase.io.write(str(geometry_path(molecule)), relaxed, format="extxyz")
        print(molecule, len(relaxed), "atoms", relaxed.info["xtb_energy_eV"], "eV")
