"""The ASE calculator of a model: agrees with ASE's numerical derivatives, drives ASE MD, gives
the forces the model was trained to give, refuses non-finite numbers and warns about structures
far from its training frames."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.calculators.calculator import CalculationFailed
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from stablemd.ase import Calculator, NonFiniteError, OutsideTrainingWarning
from stablemd.core.batch import Batch
from stablemd.diagnose.early_warning import latent_features
from stablemd.diagnose.early_warning.model_file import fit_and_attach, stored_early_warning
from stablemd.models.coverage import shortest_distances
from stablemd.models.painn import PaiNN
from stablemd.models.potential import predict
from stablemd.models.registry import save_potential


def small_painn(elements, dtype=torch.float64):
    torch.manual_seed(0)
    return PaiNN(elements=elements, n_features=16, n_interactions=2, cutoff=4.0).to(dtype)


def test_forces_match_ase_numerical_forces_and_file_round_trip(tmp_path):
    path = tmp_path / "model.pt"
    save_potential(small_painn([1, 6, 8]), path)
    atoms = molecule("CH3CH2OH")
    atoms.calc = Calculator.from_file(path)
    forces = atoms.get_forces()
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-4), atol=1e-6)
    # The per-atom energies add up to the total (up to summation order).
    assert atoms.get_potential_energies().sum() == pytest.approx(
        atoms.get_potential_energy(), rel=1e-14
    )


def test_stress_matches_ase_numerical_stress():
    atoms = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    atoms.calc = Calculator(small_painn([29]))
    np.testing.assert_allclose(
        atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-5), atol=1e-7
    )


def test_ase_velocity_verlet_conserves_energy_with_the_model():
    atoms = molecule("CH3CH2OH")
    atoms.calc = Calculator(small_painn([1, 6, 8]))
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    start = atoms.get_total_energy()
    VelocityVerlet(atoms, timestep=0.25 * units.fs).run(200)
    assert abs(atoms.get_total_energy() - start) < 1e-3 * len(atoms)


def test_non_finite_input_or_output_raises_naming_the_atom():
    atoms = molecule("CH3CH2OH")
    atoms.calc = Calculator(small_painn([1, 6, 8]))
    atoms.positions[7, 1] = np.nan
    symbol = atoms.get_chemical_symbols()[7]
    for _ in range(2):  # nothing is cached: the second call fails too
        with pytest.raises(CalculationFailed, match=rf"atom 7 \({symbol}\) has a non-finite"):
            atoms.get_forces()
    assert issubclass(NonFiniteError, CalculationFailed)

    box = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))
    box.calc = Calculator(small_painn([29]))
    box.cell[0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="the cell is not finite"):
        box.get_potential_energy()

    broken = small_painn([1, 6, 8])
    broken.energy_scaling.reference_energies[8] = np.nan  # every oxygen energy is NaN
    ethanol = molecule("CH3CH2OH")
    ethanol.calc = Calculator(broken)
    oxygen = ethanol.get_chemical_symbols().index("O")
    for _ in range(2):
        with pytest.raises(NonFiniteError, match=rf"energy is not finite \(first at atom {oxygen}"):
            ethanol.get_forces()


def test_structures_far_from_the_training_frames_warn_once_per_element_pair():
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(20):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        frames.append(atoms)
    potential = small_painn([1, 6, 8])
    shortest = shortest_distances(frames, potential.cutoff)
    assert set(shortest) == {"H-H", "H-C", "H-O", "C-C", "C-O"}  # one O: no O-O pair
    potential.metadata = {
        "training": {"shortest_distances_A": shortest, "distance_cutoff_A": potential.cutoff}
    }
    calculator = Calculator(potential)
    atoms = molecule("CH3CH2OH")
    atoms.calc = calculator
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a structure like the training frames: no warning
        atoms.get_forces()
    carbon, hydrogen = _bonded(atoms, "C", "H")
    vector = atoms.positions[hydrogen] - atoms.positions[carbon]
    atoms.positions[hydrogen] = atoms.positions[carbon] + 0.7 * vector / np.linalg.norm(vector)
    with pytest.warns(OutsideTrainingWarning) as caught:
        atoms.get_forces()
    # the H also comes closer to the other H atoms of its carbon than in any training frame
    messages = {str(w.message).split()[0]: str(w.message) for w in caught}
    assert len(caught) == len(messages) and set(messages) == {"H-C", "H-H"}
    assert f"H-C distance 0.70 Å (atoms {carbon} and {hydrogen})" in messages["H-C"]
    assert f"shortest in the model's training frames is {shortest['H-C']:.2f} Å" in messages["H-C"]
    assert all("\n" not in message for message in messages.values())
    atoms.positions[hydrogen] += 0.01  # still too close: warned already
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.get_forces()


def _bonded(atoms, a, b):
    """The closest pair of an element ``a`` atom and an element ``b`` atom."""
    symbols = atoms.get_chemical_symbols()
    pairs = [(i, j) for i, s in enumerate(symbols) for j, t in enumerate(symbols)
             if s == a and t == b]  # fmt: skip
    return min(pairs, key=lambda p: atoms.get_distance(*p))


def test_forces_are_those_the_model_was_trained_to_give():
    """A model trained with --forces direct gives its direct head; conservative and both models
    (and models without a training record) give −∂E/∂r; direct_forces= chooses explicitly."""
    atoms = molecule("CH3CH2OH")
    potential = small_painn([1, 6, 8])
    batch = Batch.from_atoms([atoms], dtype=torch.float64)
    out = predict(potential, batch, ["forces", "direct_forces"])
    direct, conservative = out["direct_forces"].detach().numpy(), out["forces"].numpy()
    assert not np.allclose(direct, conservative, atol=1e-3)
    for record, explicit, expected in [
        (None, None, conservative),
        ("conservative", None, conservative),
        ("both", None, conservative),
        ("direct", None, direct),
        ("direct", False, conservative),
        ("conservative", True, direct),
    ]:
        potential.metadata = {} if record is None else {"training": {"config": {"forces": record}}}
        atoms.calc = Calculator(potential, direct_forces=explicit)
        np.testing.assert_allclose(atoms.get_forces(), expected, rtol=1e-12, atol=1e-12)


def test_a_model_with_a_latent_domain_gives_each_atoms_grade(tmp_path):
    """The calculator's per-atom grade is the library's on the model's own features; only the
    squeezed pair of an otherwise trained-on structure is out of the domain."""
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1, cutoff=4.0)
    frames = []
    rng = np.random.default_rng(0)
    for _ in range(30):
        atoms = molecule("CH3CH2OH")
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        frames.append(atoms)
    fit_and_attach(model, frames)
    save_potential(model, tmp_path / "m.pt")
    save_potential(PaiNN([1, 6, 8], n_features=8, n_interactions=1), tmp_path / "bare.pt")
    squeezed = molecule("CH3CH2OH")
    h1, h2 = squeezed.positions[[7, 8]]  # two H of the CH3 group, pushed 0.3 Å apart
    squeezed.positions[8] = h1 + 0.3 * (h2 - h1) / np.linalg.norm(h2 - h1)
    calculator = Calculator.from_file(tmp_path / "m.pt")
    for atoms in (frames[3], squeezed):
        atoms.calc = calculator
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OutsideTrainingWarning)
            grade = atoms.calc.get_property("extrapolation_grade", atoms)
        features, numbers = latent_features(calculator.potential, [atoms])
        domain = stored_early_warning(calculator.potential).domain
        np.testing.assert_allclose(grade, domain.grade(features, numbers).numpy(), rtol=1e-6)
        flagged = atoms.calc.get_property("out_of_domain", atoms)
        np.testing.assert_array_equal(flagged, grade > domain.grade_threshold)
    assert not calculator.results["out_of_domain"][:7].any()  # far from the pair: inside
    assert calculator.results["out_of_domain"][[7, 8]].all()
    bare = Calculator.from_file(tmp_path / "bare.pt")
    squeezed.calc = bare
    squeezed.get_potential_energy()
    assert "extrapolation_grade" not in bare.results
