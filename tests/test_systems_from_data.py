"""Systems from data: bonds derived from frames, any atom order, the system a model records,
and the refusals where no topology can be derived."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms

from stablemd.cli.main import main
from stablemd.core.errors import InputError
from stablemd.data.frames import FrameSet
from stablemd.models.painn import PaiNN
from stablemd.models.registry import save_potential
from stablemd.systems import get_system, list_systems
from stablemd.systems.molecules import MOLECULES, smiles_graph
from stablemd.systems.resolve import record_training_system, resolve_system
from stablemd.systems.system import System, bond_lengths
from stablemd.training.statistics import fit_energy_scaling

BUILT_INS = ("ethanol", "aspirin", "alanine-dipeptide", "water")


def cli(argv: list[str]) -> None:
    """``stablemd argv`` in-process; fails the test unless it succeeds."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0


def rattled(atoms: Atoms, scale: float, seed: int) -> Atoms:
    out = atoms.copy()
    out.positions += np.random.default_rng(seed).normal(scale=scale, size=out.positions.shape)
    return out


def pairs(bonds) -> set[tuple[int, int]]:
    return {tuple(int(i) for i in b) for b in np.asarray(bonds)}


@pytest.mark.parametrize("name", BUILT_INS)
def test_bonds_derived_from_the_relaxed_frame_are_the_built_in_bonds(name):
    system = get_system(name, **({"n_molecules": 8} if name == "water" else {}))
    derived = System.from_frames(name, [system.atoms], "relaxed")
    assert pairs(derived.bonds) == pairs(system.bonds)
    assert (derived.molecule_index == system.molecule_index).all()
    assert derived.periodic == system.periodic
    if name in MOLECULES:  # and both are the SMILES graph, built independently by RDKit
        numbers, bonds = smiles_graph(MOLECULES[name][0])
        assert numbers == system.atoms.numbers.tolist() and pairs(bonds) == pairs(derived.bonds)


@pytest.mark.parametrize("name", BUILT_INS)
def test_frames_in_any_order_are_matched_to_the_built_in_order(name):
    system = get_system(name, **({"n_molecules": 8} if name == "water" else {}))
    rng = np.random.default_rng(3)
    frames = [rattled(system.atoms, 0.02, seed) for seed in range(3)]
    permutation = rng.permutation(len(system.atoms))
    aligned, order = system.align([a[permutation] for a in frames], "permuted")
    assert (permutation[order] == np.arange(len(system.atoms))).all()  # the inverse, exactly
    for original, back in zip(frames, aligned, strict=True):
        np.testing.assert_array_equal(back.positions, original.positions)
        np.testing.assert_array_equal(back.numbers, original.numbers)
    # the system put in the frames' order has the frames' own bonds
    permuted = system.in_frame_order(order)
    derived = System.from_frames(name, [frames[0][permutation]], "permuted")
    assert pairs(permuted.bonds) == pairs(derived.bonds)
    np.testing.assert_allclose(permuted.atoms.positions, system.atoms.positions[permutation])
    for name, quad in system.dihedrals.items():  # alanine dipeptide's phi and psi
        moved = permuted.atoms.positions[list(permuted.dihedrals[name])]
        np.testing.assert_allclose(moved, system.atoms.positions[list(quad)])


def _unstable_model(path, frames):
    """A small untrained PaiNN with its energy scale fitted: its replicas fail at varied times."""
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    from ase.calculators.singlepoint import SinglePointCalculator

    labelled = []
    for k, atoms in enumerate(frames):
        atoms = atoms.copy()
        forces = np.random.default_rng(k).normal(scale=1.0, size=atoms.positions.shape)
        atoms.calc = SinglePointCalculator(atoms, energy=-1000.0 - k, forces=forces)
        labelled.append(atoms)
    fit_energy_scaling(model, FrameSet(labelled))
    save_potential(model, path)


def test_permuted_starts_give_the_same_stable_times(tmp_path, capsys):
    """Stable times per replica are those of the built-in order: the frames are matched, put
    in the system's order, and the velocities drawn there follow the atoms."""
    system = get_system("ethanol")
    frames = [rattled(system.atoms, 0.03, seed) for seed in range(8)]
    permutation = np.arange(len(system.atoms))[::-1]  # methyl hydrogens among the moved
    ase.io.write(tmp_path / "ordered.xyz", frames)
    ase.io.write(tmp_path / "permuted.xyz", [a[permutation] for a in frames])
    _unstable_model(tmp_path / "m.pt", frames)
    times = {}
    for name in ("ordered", "permuted"):
        cli(["stability", "--model", str(tmp_path / "m.pt"), "--system", "ethanol",
             "--starts", str(tmp_path / f"{name}.xyz"), "--out", str(tmp_path / name),
             "--replicas", "6", "--time-ps", "0.1", "--check-every", "2",
             "--no-progress"])  # fmt: skip
        summary = json.loads((tmp_path / name / "m" / "result.json").read_text())["summary"]
        times[name] = summary["stable_times_ps"]
    out = capsys.readouterr().out
    assert "permuted.xyz: atoms in another order than the ethanol system" in out
    inverse = np.argsort(permutation)
    assert f"0←{inverse[0]}" in out.replace("\n", "")
    assert times["permuted"] == times["ordered"]
    assert len(set(times["ordered"])) > 2  # the replicas fail at different times


def test_a_model_records_its_system_and_commands_need_no_system(tmp_path, capsys):
    """The training workflow records the system of the training frames; simulate then runs
    without --system or --starts, and without --system from --starts alone."""
    ethanol = get_system("ethanol")
    frames = [rattled(ethanol.atoms, 0.02, seed) for seed in range(4)]
    record = record_training_system(frames, "data.db")
    assert record["numbers"] == ethanol.atoms.numbers.tolist()
    assert pairs(record["bonds"]) == pairs(ethanol.bonds)
    _unstable_model(tmp_path / "bare.pt", frames)
    with pytest.raises(InputError, match="records no system"):
        resolve_system(None, model_metadata={}, model_name="bare.pt")
    ase.io.write(tmp_path / "starts.xyz", frames[:2])
    cli(["simulate", "--model", str(tmp_path / "bare.pt"), "--starts",
         str(tmp_path / "starts.xyz"), "--out", str(tmp_path / "a"), "--replicas", "2",
         "--time-ps", "0.005", "--no-progress"])  # fmt: skip
    assert "derived from" in capsys.readouterr().out
    model = torch.load(tmp_path / "bare.pt", weights_only=True)
    model["metadata"]["system"] = record
    torch.save(model, tmp_path / "recorded.pt")
    cli(["simulate", "--model", str(tmp_path / "recorded.pt"), "--out", str(tmp_path / "b"),
         "--replicas", "2", "--time-ps", "0.005", "--no-progress"])  # fmt: skip
    assert "recorded in" in capsys.readouterr().out
    # starts of another molecule than the training frames' bring their own system
    from ase.build import molecule

    ase.io.write(tmp_path / "methanol.xyz", molecule("CH3OH"))
    cli(["simulate", "--model", str(tmp_path / "recorded.pt"), "--out", str(tmp_path / "c"),
         "--starts", str(tmp_path / "methanol.xyz"), "--replicas", "2", "--time-ps", "0.005",
         "--no-progress"])  # fmt: skip
    assert "system: methanol (derived from" in capsys.readouterr().out


def test_a_recorded_system_keeps_the_named_dihedrals_of_frames_in_its_order():
    """Frames that data generate labelled alanine-dipeptide, in its order, record φ and ψ, and
    the model's system read back has them; frames in another order, or of another molecule under
    that name, record none."""
    dipeptide = get_system("alanine-dipeptide")
    frames = [rattled(dipeptide.atoms, 0.02, seed) for seed in range(3)]
    for atoms in frames:
        atoms.info["system"] = "alanine-dipeptide"
    record = record_training_system(frames, "data.db")
    assert record["dihedrals"] == {"phi": [4, 6, 8, 14], "psi": [6, 8, 14, 16]}
    assert System.from_record(record).dihedrals == dipeptide.dihedrals
    permutation = np.arange(22)
    permutation[[1, 21]] = [21, 1]  # two hydrogens swapped: the same elements, other bonds
    reordered = [a[permutation] for a in frames]
    assert record_training_system(reordered, "data.db")["dihedrals"] == {}
    ethanol = [rattled(get_system("ethanol").atoms, 0.02, 0)]
    ethanol[0].info["system"] = "alanine-dipeptide"
    assert record_training_system(ethanol, "data.db")["dihedrals"] == {}


def test_clashing_atoms_are_refused_naming_the_frame_and_atoms():
    ethanol = get_system("ethanol").atoms
    clash = ethanol.copy()
    clash.positions[5] = clash.positions[6] + [0.1, 0.0, 0.0]
    with pytest.raises(InputError, match=r"f.xyz: frame 1: atoms 5 \(H\) and 6 \(H\) are 0.10 Å"):
        System.from_frames("x", [ethanol, clash], "f.xyz")


def two_waters() -> Atoms:
    """Two waters 3 Å apart in a periodic 8 Å cube."""
    water = [[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]]
    positions = np.array([*water, *(np.array(water) + [0, 0, 3.0])]) + 2.0
    return Atoms("OH2OH2", positions=positions, cell=[8.0] * 3, pbc=True)


def test_fragments_that_bond_differently_are_refused():
    box = two_waters()
    moved = box.copy()  # a proton handed from molecule 0 to molecule 1's oxygen, below it
    moved.positions[1] = moved.positions[3] - [0.0, 0.97, 0.0]
    with pytest.raises(InputError, match=r"box.extxyz: frame 1: atoms 1 \(H\) and 3 \(O\) are "):
        System.from_frames("x", [box, moved], "box.extxyz")
    stretched = box.copy()
    stretched.positions[2] += 2.0 * (stretched.positions[2] - stretched.positions[0])
    with pytest.raises(InputError, match=r"frame 1: the bond of atoms 0 \(O\) and 2 \(H\)"):
        System.from_frames("x", [box, stretched], "box.extxyz")
    two = System.from_frames("box", [box, box.copy()], "box.extxyz")
    assert two.periodic and two.molecule_index.tolist() == [0, 0, 0, 1, 1, 1]


def test_hydrogens_listed_otherwise_are_matched_though_every_element_is_in_place():
    """Swapping ethanol's hydroxyl hydrogen with a methyl one leaves the element sequence as
    it was; taken as the system's order, the O–H and C–H bonds would join the wrong atoms."""
    system = get_system("ethanol")
    hydrogens = np.flatnonzero(system.atoms.numbers == 1)
    swap = np.arange(len(system.atoms))
    swap[[hydrogens[0], hydrogens[-1]]] = swap[[hydrogens[-1], hydrogens[0]]]
    frames = [rattled(system.atoms, 0.02, seed)[swap] for seed in range(2)]
    aligned, order = system.align(frames, "swapped")
    assert order is not None
    for atoms in aligned:
        assert bond_lengths(atoms, system.bonds).max() < 1.6  # every bond between its atoms


def test_another_molecule_of_the_same_formula_is_refused():
    dimethyl_ether = Atoms(  # C2H6O like ethanol, bonded otherwise
        "COCHHHHHH",
        positions=[[0, 0, 0], [1.41, 0, 0], [1.88, 1.33, 0], [-0.36, -1.03, 0],
                   [-0.36, 0.51, 0.89], [-0.36, 0.51, -0.89], [2.97, 1.33, 0],
                   [1.52, 1.84, 0.89], [1.52, 1.84, -0.89]],
    )  # fmt: skip
    with pytest.raises(InputError, match="ether.xyz: frame 0 lists the atoms of C2H6O"):
        get_system("ethanol").align([dimethyl_ether], "ether.xyz")
    ethanol_order = dimethyl_ether[[0, 3, 4, 5, 2, 6, 7, 1, 8]]  # C H H H C H H O H, as ethanol
    assert (ethanol_order.numbers == get_system("ethanol").atoms.numbers).all()
    with pytest.raises(InputError, match="C2H6O with other bonds than the ethanol system"):
        get_system("ethanol").align([ethanol_order], "ether.xyz")


def test_list_includes_the_built_ins():
    assert set(BUILT_INS) <= set(list_systems())
