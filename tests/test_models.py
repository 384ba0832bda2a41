"""PaiNN and the MACE adapter: symmetry, derivatives, periodicity, smoothness, files."""

from __future__ import annotations

import copy
import functools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from scipy.spatial.transform import Rotation

from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.models.potential import predict
from stablemd.models.registry import (
    attach,
    attachment,
    build_potential,
    load_potential,
    save_potential,
)

KINDS = ["painn", "mace"]
ELEMENTS = [1, 6, 8, 29]
SMALL = {
    "painn": {"n_features": 16, "n_interactions": 2, "n_rbf": 8},
    "mace": {"hidden_irreps": "8x0e+8x1o", "radial_mlp": [16, 16], "avg_num_neighbors": 8.0},
}
TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-11}}


@functools.cache
def _float32_model(kind):
    torch.manual_seed(0)
    model = build_potential(kind, elements=ELEMENTS, cutoff=4.0, **SMALL[kind]).eval()
    with torch.no_grad():  # like a trained model: no parameter (e.g. a bias) left at zero
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def make_model(kind, dtype=torch.float64):
    """A small random model (one per kind) in the given dtype."""
    return copy.deepcopy(_float32_model(kind)).to(dtype)


def rattled(atoms, seed, scale=0.05):
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(seed).normal(scale=scale, size=atoms.positions.shape)
    return atoms


def ethanol():
    return rattled(molecule("CH3CH2OH"), 0)


def copper():
    """A rattled 8-atom fcc copper supercell with a non-orthogonal (primitive) cell."""
    return rattled(bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2)), 1, scale=0.1)


def evaluate(model, atoms_list, dtype=torch.float64, properties=("energy", "forces")):
    return predict(model, Batch.from_atoms(atoms_list, dtype=dtype), properties)


def moved(atoms, positions=None, cell=None):
    atoms = atoms.copy()
    if cell is not None:
        atoms.set_cell(cell, scale_atoms=False)
    if positions is not None:
        atoms.positions = positions
    return atoms


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_rotation_and_translation(kind, dtype):
    model = make_model(kind, dtype)
    atoms = ethanol()
    rotation = Rotation.random(random_state=3).as_matrix()
    turned = moved(atoms, atoms.positions @ rotation.T + [1.5, -2.0, 0.7])
    direct = model.supports_direct_forces
    properties = ["forces", "features"] + (["direct_forces"] if direct else [])
    a, b = (evaluate(model, [x], dtype, properties) for x in (atoms, turned))
    rot = torch.as_tensor(rotation, dtype=dtype)
    torch.testing.assert_close(b["energies"], a["energies"], **TOL[dtype])
    torch.testing.assert_close(b["features"], a["features"], **TOL[dtype])
    torch.testing.assert_close(b["forces"], a["forces"] @ rot.T, **TOL[dtype])
    if direct:
        assert a["direct_forces"].abs().max() > 1e-3
        torch.testing.assert_close(b["direct_forces"], a["direct_forces"] @ rot.T, **TOL[dtype])


@pytest.mark.parametrize("kind", KINDS)
def test_permutation(kind):
    model = make_model(kind)
    atoms = ethanol()
    order = np.random.default_rng(4).permutation(len(atoms))
    a, b = evaluate(model, [atoms]), evaluate(model, [atoms[order]])
    torch.testing.assert_close(b["energy"], a["energy"])
    torch.testing.assert_close(b["energies"], a["energies"][order])
    torch.testing.assert_close(b["forces"], a["forces"][order])


@pytest.mark.parametrize("system", [ethanol, copper])
@pytest.mark.parametrize("kind", KINDS)
def test_forces_are_finite_differences_of_energy(kind, system):
    model = make_model(kind)
    atoms, h = system(), 1e-5
    displaced = []
    for index in range(3 * len(atoms)):
        for sign in (1, -1):
            positions = atoms.positions.copy()
            positions.flat[index] += sign * h
            displaced.append(moved(atoms, positions))
    energy = evaluate(model, displaced, properties=["energy"])["energy"].reshape(-1, 2)
    numerical = -(energy[:, 0] - energy[:, 1]) / (2 * h)
    forces = evaluate(model, [atoms])["forces"].reshape(-1)
    assert forces.abs().max() > 1e-3
    torch.testing.assert_close(forces, numerical, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_stress_is_strain_derivative_of_energy(kind):
    model = make_model(kind)
    atoms, h = copper(), 1e-5
    strained = []
    for i in range(3):
        for j in range(3):
            for sign in (1, -1):
                deform = np.eye(3)
                deform[i, j] += sign * h / 2
                deform[j, i] += sign * h / 2
                strained.append(moved(atoms, atoms.positions @ deform, atoms.cell[:] @ deform))
    energy = evaluate(model, strained, properties=["energy"])["energy"].reshape(3, 3, 2)
    numerical = (energy[..., 0] - energy[..., 1]) / (2 * h) / atoms.get_volume()
    stress = evaluate(model, [atoms], properties=["stress"])["stress"][0]
    assert stress.abs().max() > 1e-4
    torch.testing.assert_close(stress, numerical, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_periodic_replication_keeps_energy_per_atom(kind):
    model = make_model(kind)
    atoms = copper()
    big = atoms.repeat((2, 2, 2))
    small, large = (evaluate(model, [a], properties=["forces", "stress"]) for a in (atoms, big))
    torch.testing.assert_close(large["energy"] / len(big), small["energy"] / len(atoms))
    torch.testing.assert_close(large["forces"][: len(atoms)], small["forces"])
    torch.testing.assert_close(large["stress"], small["stress"])


@pytest.mark.parametrize("kind", KINDS)
def test_batch_equals_systems_alone(kind):
    model = make_model(kind, torch.float32)
    systems = [ethanol(), rattled(molecule("H2O"), 2), copper()]
    together = evaluate(model, systems, torch.float32, ["forces", "features"])
    alone = [evaluate(model, [s], torch.float32, ["forces", "features"]) for s in systems]
    for key in ("energy", "energies", "forces", "features"):
        expected = torch.cat([out[key] for out in alone])
        torch.testing.assert_close(together[key], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_smooth_at_cutoff(kind):
    """Energy and forces of a C–O pair go continuously to their separated values at the cutoff;
    the force vanishes quadratically (C² energy, C¹ forces)."""
    model = make_model(kind)
    cutoff = model.cutoff
    far = evaluate(model, [Atoms("CO", [[0, 0, 0], [0, 0, cutoff + 1e-6]])])
    deltas = [1e-2, 1e-3]
    near = [evaluate(model, [Atoms("CO", [[0, 0, 0], [0, 0, cutoff - d]])]) for d in deltas]
    assert abs(float(near[1]["energy"].detach() - far["energy"].detach())) < 1e-8
    assert float(far["forces"].abs().max()) == 0.0
    force = [float(out["forces"][1, 2].abs()) for out in near]
    assert 0 < force[1] < 1e-6
    assert force[1] / force[0] < 0.03  # linear vanishing (C¹ energy only) would give 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_element_names_the_atom(kind):
    model = make_model(kind)
    with pytest.raises(InputError, match="atom 2 is Cl"):
        evaluate(model, [Atoms("CHClO", positions=np.eye(4, 3) * 1.2)])


@pytest.mark.parametrize("kind", KINDS)
def test_forward_leaves_input_positions_alone(kind):
    model = make_model(kind)
    batch = Batch.from_atoms([ethanol()], dtype=torch.float64)
    model(batch)
    assert not batch.positions.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, dtype, tmp_path):
    model = make_model(kind, dtype)
    model.energy_scaling.scale.fill_(2.5)
    e0 = torch.tensor([-13.6, -1029.0, -2041.0], dtype=dtype)
    model.energy_scaling.reference_energies[[1, 6, 8]] = e0
    path = tmp_path / f"{kind}.pt"
    save_potential(model, path, metadata={"note": "test"})
    loaded = load_potential(path)
    assert loaded.hyperparameters() == model.hyperparameters()
    assert loaded.metadata == {"note": "test"}
    systems = [ethanol(), copper()]
    evaluate(model, systems, dtype)  # MACE's first float32 call rounds differently (~1e-8)
    a, b = evaluate(model, systems, dtype), evaluate(loaded, systems, dtype)
    assert b["energy"].dtype == dtype
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(a["forces"], b["forces"])


def test_attachments_travel_with_their_weights_only(tmp_path):
    model = make_model("painn")
    attach(model, "domain", {"threshold": 2.0})
    save_potential(model, tmp_path / "a.pt")
    loaded = load_potential(tmp_path / "a.pt")
    assert attachment(loaded, "domain")["threshold"] == 2.0
    assert attachment(loaded, "posterior") is None
    with torch.no_grad():  # trained further: the attachment no longer describes the weights
        next(loaded.parameters()).add_(0.01)
    with pytest.raises(InputError, match="domain was fitted for other weights"):
        attachment(loaded, "domain")
    save_potential(loaded, tmp_path / "b.pt")
    assert load_potential(tmp_path / "b.pt").attachments == {}


@pytest.mark.parametrize("kind", KINDS)
def test_float64_agrees_with_float32(kind):
    atoms = [ethanol(), copper()]
    single = evaluate(make_model(kind, torch.float32), atoms, torch.float32)
    double = evaluate(make_model(kind, torch.float64), atoms, torch.float64)
    assert double["energy"].dtype == torch.float64 and double["forces"].dtype == torch.float64
    torch.testing.assert_close(single["energy"].double(), double["energy"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(single["forces"].double(), double["forces"], rtol=1e-4, atol=1e-4)
