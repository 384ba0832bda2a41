"""Built-in systems: bonds, molecules, density, and that the shipped structures are relaxed."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import minimize_rotation_and_translation
from ase.units import kg, m

from stablemd.core.errors import InputError
from stablemd.oracles import get_oracle
from stablemd.systems import get_system, list_systems
from stablemd.systems.molecules import build_molecule

MOLECULES = {"ethanol": (9, 8), "aspirin": (21, 21), "alanine-dipeptide": (22, 21)}


def test_registry_lists_all_systems():
    assert set(list_systems()) == {*MOLECULES, "water", "pd13-h2"}


def test_pd13_h2_is_a_relaxed_cluster_with_hydrogen_on_palladium():
    system = get_system("pd13-h2")
    atoms = system.atoms
    assert atoms.get_chemical_formula() == "H4Pd13" and not system.periodic
    assert system.default_oracle == "xtb" and system.timestep_fs == 0.5
    atoms.calc = get_oracle("xtb")
    assert np.abs(atoms.get_forces()).max() < 0.02
    distances = atoms.get_all_distances()
    hydrogen, palladium = np.flatnonzero(atoms.numbers == 1), np.flatnonzero(atoms.numbers == 46)
    # each H sits on the cluster (Pd–H 1.5–1.8 Å), the molecules dissociated (H–H > 1.5 Å)
    to_pd = distances[np.ix_(hydrogen, palladium)].min(axis=1)
    assert ((to_pd > 1.5 - 0.05) & (to_pd < 1.8)).all()
    hh = distances[np.ix_(hydrogen, hydrogen)][np.triu_indices(len(hydrogen), 1)]
    assert hh.min() > 1.5
    assert (system.molecule_index == 0).all()  # one cluster


@pytest.mark.parametrize(("name", "sizes"), MOLECULES.items())
def test_molecule_bonds_are_the_covalent_graph_of_one_molecule(name, sizes):
    system = get_system(name)
    n_atoms, n_bonds = sizes
    assert len(system.atoms) == n_atoms and system.bonds.shape == (n_bonds, 2)
    assert (system.molecule_index == 0).all()
    assert (system.bonds[:, 0] < system.bonds[:, 1]).all()
    symbols = np.array(system.atoms.get_chemical_symbols())
    # valences: H one neighbour, C three (sp2) or four, N three, O one or two
    counts = np.bincount(system.bonds.ravel(), minlength=n_atoms)
    allowed = {"H": {1}, "C": {3, 4}, "N": {3}, "O": {1, 2}}
    assert all(c in allowed[s] for s, c in zip(symbols, counts, strict=True))
    assert 0.95 < system.reference_bond_lengths.min() and system.reference_bond_lengths.max() < 1.6
    assert system.default_oracle == "xtb" and system.timestep_fs == 0.5


@pytest.mark.parametrize("name", MOLECULES)
def test_shipped_molecules_are_relaxed_with_xtb(name):
    atoms = get_system(name).atoms
    atoms.calc = get_oracle("xtb")
    assert np.abs(atoms.get_forces()).max() < 0.02


@pytest.mark.parametrize(
    "name",
    ["ethanol", pytest.param("alanine-dipeptide", marks=pytest.mark.slow)],  # ~6 s: 10 conformers
)
def test_building_from_smiles_reproduces_the_shipped_geometry(name):
    """``python -m stablemd.systems.molecules`` regenerates the shipped file."""
    shipped = get_system(name).atoms
    built = build_molecule(name)
    assert built.get_chemical_symbols() == shipped.get_chemical_symbols()
    minimize_rotation_and_translation(shipped, built)
    assert np.sqrt(((built.positions - shipped.positions) ** 2).sum(1).mean()) < 0.02


def test_alanine_dipeptide_phi_and_psi_follow_the_backbone():
    system = get_system("alanine-dipeptide")
    symbols = system.atoms.get_chemical_symbols()
    bonds = {tuple(b) for b in system.bonds.tolist()}
    for name, expected in (("phi", "CNCC"), ("psi", "NCCN")):
        quad = system.dihedrals[name]
        assert "".join(symbols[i] for i in quad) == expected
        assert all(tuple(sorted(p)) in bonds for p in zip(quad[:-1], quad[1:], strict=True))


def test_relaxed_alanine_dipeptide_is_l_alanine_in_the_c5_basin():
    """The shipped minimum is the extended C5 conformer (φ ≈ −150°, ψ ≈ 165°: the N–H and C=O of
    the alanine close a five-membered ring), not C7eq (φ ≈ −80°, ψ ≈ 70°) or C7ax (φ ≈ 70°,
    ψ ≈ −70°); and its Cα is S (L-alanine), which fixes the signs of φ and ψ."""
    from rdkit import Chem

    from stablemd.analysis.ramachandran import phi_psi

    system = get_system("alanine-dipeptide")
    (phi,), (psi,) = phi_psi([system.atoms], system)
    assert -180 <= phi < -130 and 140 < psi < 180
    atoms = system.atoms
    mol = Chem.RWMol()
    for z in atoms.numbers:
        mol.AddAtom(Chem.Atom(int(z)))
    for i, j in system.bonds.tolist():
        mol.AddBond(i, j, Chem.BondType.SINGLE)
    conformer = Chem.Conformer(len(atoms))
    for k, position in enumerate(atoms.positions):
        conformer.SetAtomPosition(k, position.tolist())
    mol.AddConformer(conformer)
    Chem.AssignStereochemistryFrom3D(mol)
    alpha = system.dihedrals["phi"][2]
    assert mol.GetAtomWithIdx(alpha).GetProp("_CIPCode") == "S"


def test_water_box_density_bonds_and_molecules():
    system = get_system("water")
    atoms = system.atoms
    n = len(atoms) // 3
    assert n == 64 and atoms.pbc.all() and system.default_oracle == "openmm-spcfw"
    assert atoms.get_chemical_symbols() == ["O", "H", "H"] * n
    np.testing.assert_allclose(atoms.cell.lengths(), atoms.cell.lengths()[0])
    assert np.allclose(atoms.cell.angles(), 90)
    density = atoms.get_masses().sum() / kg / (atoms.get_volume() / m**3) / 1000  # g/cm³
    assert density == pytest.approx(0.997, rel=1e-6)
    assert len(system.bonds) == 2 * n
    assert (system.molecule_index == np.repeat(np.arange(n), 3)).all()
    assert (np.abs(system.reference_bond_lengths - 1.012) < 0.06).all()
    oxygens = atoms[::3]
    distances = oxygens.get_all_distances(mic=True)[np.triu_indices(n, 1)]
    assert distances.min() > 2.3  # relaxed into a liquid-like, overlap-free box


def test_water_parameters_and_copies():
    small = get_system("water", n_molecules=8, seed=3)
    assert len(small.atoms) == 24
    assert not np.allclose(
        small.atoms.positions, get_system("water", n_molecules=8).atoms.positions
    )
    small.atoms.positions += 1.0
    small.bonds[:] = 0
    again = get_system("water", n_molecules=8, seed=3)
    assert not np.allclose(again.atoms.positions, small.atoms.positions) and again.bonds.any()


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("benzene", {}, "unknown system 'benzene'"),
        ("ethanol", {"n_molecules": 3}, "has no parameter 'n_molecules'"),
        ("water", {"temperature": 3}, "has no parameter 'temperature'"),
        ("water", {"n_molecules": 0}, "n_molecules must be at least 1"),
    ],
)
def test_bad_system_requests(name, params, message):
    with pytest.raises(InputError, match=message):
        get_system(name, **params)


# -- systems a user stores by name -------------------------------------------------------------


def cli(argv: list[str]) -> str:
    """``stablemd argv`` in-process; returns its standard output, failing unless it succeeds."""
    from typer.testing import CliRunner

    from stablemd.cli.main import app

    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_a_smiles_system_round_trips_through_the_store_and_data_generate(tmp_path):
    """Embedded, relaxed with xTB, listed, generated from by name; its bonds are its SMILES
    graph (RDKit's, independent of the geometry they were derived from)."""
    import ase.io

    from stablemd.data.database import read_frames
    from stablemd.systems.molecules import smiles_graph
    from stablemd.systems.store import store_directory

    assert str(store_directory()).startswith(str(tmp_path))
    cli(["systems", "add", "acetaldehyde", "--smiles", "CC=O"])
    listing = cli(["systems"])
    assert "acetaldehyde" in listing and "stored" in listing and "ethanol" in listing
    system = get_system("acetaldehyde")
    numbers, bonds = smiles_graph("CC=O")
    assert system.atoms.numbers.tolist() == numbers
    assert {tuple(b) for b in system.bonds.tolist()} == {tuple(b) for b in bonds.tolist()}
    assert system.default_oracle == "xtb" and not system.periodic
    stored = ase.io.read(store_directory() / "acetaldehyde.extxyz")
    stored.calc = get_oracle("xtb")
    assert np.abs(stored.get_forces()).max() < 0.02  # relaxed with xTB
    out = tmp_path / "d.db"
    cli(["data", "generate", "acetaldehyde", "--out", str(out), "--steps", "4", "--every", "2",
         "--quiet"])  # fmt: skip
    frames = read_frames(out)
    assert len(frames) == 2 and {a.info["system"] for a in frames} == {"acetaldehyde"}
    assert frames[0].numbers.tolist() == numbers
    cli(["systems", "remove", "acetaldehyde"])
    assert "acetaldehyde" not in list_systems()


def test_a_periodic_box_from_a_file_is_judged_by_contacts_between_molecules(tmp_path):
    import ase.io

    from stablemd.monitors.criteria import MinNonbondedDistance, geometric_criterion

    water = get_system("water", n_molecules=8)
    ase.io.write(tmp_path / "box.extxyz", water.atoms)
    cli(["systems", "add", "box", "--from", str(tmp_path / "box.extxyz"), "--oracle",
         "openmm-spcfw", "--timestep", "1"])  # fmt: skip
    box = get_system("box")
    assert box.periodic and box.timestep_fs == 1.0 and box.default_oracle == "openmm-spcfw"
    assert (box.molecule_index == water.molecule_index).all()
    assert {tuple(b) for b in box.bonds.tolist()} == {tuple(b) for b in water.bonds.tolist()}
    np.testing.assert_allclose(box.atoms.cell, water.atoms.cell)
    criterion = geometric_criterion(box, 0.5, 1.2, nonbonded_intramolecular=False)
    assert isinstance(criterion, MinNonbondedDistance)


def test_a_relaxation_that_does_not_converge_is_refused(monkeypatch):
    """Stored as relaxed, an unconverged structure would be no minimum of its oracle."""
    from stablemd.systems import molecules

    monkeypatch.setattr(molecules, "RELAX_MAX_STEPS", 1)
    with pytest.raises(InputError, match="relaxation with xtb: 1 LBFGS steps left a force"):
        molecules.relax(molecules.embed("CCO"), "xtb")


def test_systems_remove_deletes_nothing_outside_the_store(tmp_path):
    """A name with a path in it is no stored system: the file it points at stays."""
    from typer.testing import CliRunner

    from stablemd.cli.main import app
    from stablemd.systems.store import store_directory

    store_directory().mkdir(parents=True)  # (a path through a missing folder would not resolve)
    outside = store_directory().parent / "frames.extxyz"
    outside.write_text("1\n\nH 0 0 0\n")
    assert (store_directory() / "../frames.extxyz").is_file()
    result = CliRunner().invoke(app, ["systems", "remove", "../frames"])
    assert isinstance(result.exception, InputError)
    assert "no stored system '../frames'" in str(result.exception)
    assert outside.is_file()


def test_a_damaged_stored_system_is_marked_and_the_others_still_listed(monkeypatch):
    from typer.testing import CliRunner

    from stablemd.cli.main import app
    from stablemd.cli.output import console
    from stablemd.systems.store import store_directory

    monkeypatch.setattr(console, "width", 200)  # the table's rows unwrapped

    store_directory().mkdir(parents=True)
    (store_directory() / "broken.extxyz").write_text("not a structure\n")
    result = CliRunner().invoke(app, ["systems"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "aspirin" in text and "stored, unreadable" in text
    assert "broken.extxyz: not a readable stored system" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["systems", "add", "ethanol", "--smiles", "CCO"], "a built-in system has it"),
        (["systems", "add", "x y", "--smiles", "CCO"], "system name 'x y'"),
        (["systems", "add", "x"], "either --smiles or --from"),
        (["systems", "add", "x", "--smiles", "C1CC"], "RDKit cannot read this SMILES"),
        (["systems", "remove", "nothing"], "no stored system 'nothing'"),
        (["systems", "remove", "water"], "is a built-in system"),
    ],
)
def test_bad_stored_systems_are_refused(argv, message):
    from typer.testing import CliRunner

    from stablemd.cli.main import app

    result = CliRunner().invoke(app, argv)
    assert isinstance(result.exception, InputError) and message in str(result.exception)
