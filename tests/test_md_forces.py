"""Force terms: model forces on active replicas only, extra outputs from the same call, ASE
calculators, force levels."""

from __future__ import annotations

import pytest
import torch
from ase.build import molecule
from md_support import PairLJ, argon_state, single_thread  # noqa: F401

from stablemd.ase import Calculator
from stablemd.md.forces import CalculatorForces, ForceLevels, ModelForces
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
    result = ModelForces(model)(state)
    energy, forces = result.energy, result.forces
    reference = predict(model, state.batch())
    assert torch.allclose(energy, reference["energy"], atol=1e-12)
    assert torch.allclose(forces, reference["forces"], atol=1e-12)

    state.active = torch.tensor([False, True, False, True, True])
    model.atoms_evaluated = 0
    active = ModelForces(model)(state)
    energy_active, forces_active = active.energy, active.forces
    assert model.atoms_evaluated == 3 * 13
    atoms = state.active_atoms
    assert torch.allclose(energy_active[state.active], energy[state.active], atol=1e-12)
    assert torch.allclose(forces_active[atoms], forces[atoms], atol=1e-12)
    assert torch.all(energy_active[~state.active] == 0)
    assert torch.all(forces_active[~atoms] == 0)

    state.active[:] = False
    model.atoms_evaluated = 0
    energy_none = ModelForces(model)(state).energy
    assert model.atoms_evaluated == 0 and torch.all(energy_none == 0)


def test_float32_model_gives_float64_forces(painn):
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)  # float32
    model.load_state_dict(painn.state_dict())
    state = state_from_atoms([molecule("CH3CH2OH")] * 2)
    single, double = ModelForces(model)(state), ModelForces(painn)(state)
    assert single.energy.dtype == single.forces.dtype == torch.float64
    assert torch.allclose(single.forces, double.forces, atol=1e-4)


def test_extra_outputs_come_from_the_same_call_and_scatter_like_forces(painn):
    state = state_from_atoms([molecule("CH3CH2OH")] * 3)
    state.positions = state.positions + 0.05 * torch.randn(
        state.positions.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    result = ModelForces(painn, outputs=("direct_forces", "features"))(state)
    reference = predict(painn, state.batch(), ["forces", "direct_forces", "features"])
    assert torch.allclose(result.forces, reference["forces"], atol=1e-12)
    for name in ("direct_forces", "features"):
        assert torch.allclose(result.outputs[name], reference[name], atol=1e-12)
    assert not torch.allclose(result.outputs["direct_forces"], result.forces, atol=1e-3)
    state.active = torch.tensor([True, False, True])
    frozen = ModelForces(painn, outputs=("features",))(state)
    atoms = state.active_atoms
    assert torch.allclose(frozen.outputs["features"][atoms], result.outputs["features"][atoms])
    assert torch.all(frozen.outputs["features"][~atoms] == 0)


def test_calculator_forces_match_model_forces(painn):
    atoms = [molecule("CH3CH2OH"), molecule("CH3OH")]
    state = maxwell_boltzmann(state_from_atoms(atoms), 300.0, 0)
    state.positions = state.positions + 0.1 * state.velocities
    state.active = torch.tensor([True, True])
    ase, ours = CalculatorForces(Calculator(painn))(state), ModelForces(painn)(state)
    assert torch.allclose(ase.energy, ours.energy, atol=1e-10)
    assert torch.allclose(ase.forces, ours.forces, atol=1e-10)


def test_force_levels_add_up_and_keep_each_level():
    model = PairLJ()
    state = displaced_argon(2)
    single = ModelForces(model)(state)
    levels = ForceLevels(ModelForces(model), ModelForces(model))(state)
    assert torch.allclose(levels.energy, 2 * single.energy)
    assert torch.allclose(levels.forces, 2 * single.forces)
    assert torch.equal(levels.outputs[ForceLevels.FAST], single.forces)
    assert torch.equal(levels.outputs[ForceLevels.SLOW], single.forces)
