"""Force terms: model forces on active replicas only, ASE calculators, sums."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule
from md_support import PairLJ, argon_state, single_thread  # noqa: F401

from stablemd.ase import Calculator
from stablemd.md.forces import CalculatorForces, ModelForces, SumOfForces
from stablemd.md.starts import state_from_atoms
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.models.painn import PaiNN
from stablemd.models.potential import predict

pytestmark = pytest.mark.usefixtures("single_thread")


def displaced_argon(n_replicas: int):
    state = argon_state(n_replicas)
    generator = torch.Generator().manual_seed(0)
    state.positions = state.positions + 0.05 * torch.randn(
        state.positions.shape, generator=generator, dtype=torch.float64
    )
    return state


@pytest.fixture(scope="module")
def painn():
    torch.manual_seed(0)
    return PaiNN([1, 6, 8], n_features=8, n_interactions=1).double()


def test_model_forces_skip_frozen_replicas_and_scatter_back():
    model = PairLJ()
    state = displaced_argon(5)
    energy, forces = ModelForces(model)(state)
    reference = predict(model, state.batch())
    assert torch.allclose(energy, reference["energy"], atol=1e-12)
    assert torch.allclose(forces, reference["forces"], atol=1e-12)

    state.active = torch.tensor([False, True, False, True, True])
    model.atoms_evaluated = 0
    energy_active, forces_active = ModelForces(model)(state)
    assert model.atoms_evaluated == 3 * 13
    atoms = state.active_atoms
    assert torch.allclose(energy_active[state.active], energy[state.active], atol=1e-12)
    assert torch.allclose(forces_active[atoms], forces[atoms], atol=1e-12)
    assert torch.all(energy_active[~state.active] == 0)
    assert torch.all(forces_active[~atoms] == 0)

    state.active[:] = False
    model.atoms_evaluated = 0
    energy_none, _ = ModelForces(model)(state)
    assert model.atoms_evaluated == 0 and torch.all(energy_none == 0)


def test_float32_model_gives_float64_forces(painn):
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)  # float32
    model.load_state_dict(painn.state_dict())
    state = state_from_atoms([molecule("CH3CH2OH")] * 2)
    energy, forces = ModelForces(model)(state)
    energy64, forces64 = ModelForces(painn)(state)
    assert energy.dtype == forces.dtype == torch.float64
    assert torch.allclose(forces, forces64, atol=1e-4)


def test_direct_forces_come_from_the_force_head(painn):
    state = state_from_atoms([molecule("CH3CH2OH"), molecule("CH3CH2OH")])
    _, direct = ModelForces(painn, direct=True)(state)
    _, conservative = ModelForces(painn)(state)
    reference = predict(painn, state.batch(), forces=False, direct_forces=True)
    assert torch.allclose(direct, reference["direct_forces"], atol=1e-12)
    assert not torch.allclose(direct, conservative, atol=1e-3)


def test_calculator_forces_match_model_forces(painn):
    atoms = [molecule("CH3CH2OH"), molecule("CH3OH")]
    state = maxwell_boltzmann(state_from_atoms(atoms), 300.0, 0)
    state.positions = state.positions + 0.1 * state.velocities
    state.active = torch.tensor([True, True])
    energy, forces = CalculatorForces(Calculator(painn))(state)
    energy_model, forces_model = ModelForces(painn)(state)
    assert torch.allclose(energy, energy_model, atol=1e-10)
    assert torch.allclose(forces, forces_model, atol=1e-10)


def test_sum_of_forces_adds_terms():
    model = PairLJ()
    state = displaced_argon(2)
    single = ModelForces(model)(state)
    double = SumOfForces([ModelForces(model), ModelForces(model)])(state)
    assert torch.allclose(double[0], 2 * single[0]) and torch.allclose(double[1], 2 * single[1])
