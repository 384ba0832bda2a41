"""Uncertainty-biased MD: bias forces and stress are derivatives of u, τ = 0 is plain MD, the
adaptive strength and the stop at a threshold."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk
from md_support import run_steps
from test_models import ethanol, make_model, rattled
from test_uncertainty import fitted

from stablemd.core.batch import Batch
from stablemd.explore.uncertainty.bias import (
    UncertaintyBiasedForces,
    UncertaintyThreshold,
    uncertainty_and_derivatives,
)
from stablemd.md.forces import ModelForces
from stablemd.md.integrators import make_integrator
from stablemd.md.starts import initial_state


@pytest.fixture(scope="module")
def painn():
    model = make_model("painn")
    return model, fitted(model, n_train=2)


def u_of(model, uncertainty, atoms_list):
    batch = Batch.from_atoms(atoms_list, dtype=torch.float64)
    return uncertainty.predict(model, batch)["uncertainty"]


@pytest.mark.parametrize("kind", ["sketched", "last-layer"])
def test_bias_forces_are_finite_differences_of_u(painn, kind):
    """Sketched features take a double backward; last-layer ones two first-order passes through
    the fused kernel."""
    model = painn[0]
    uncertainty = painn[1] if kind == "sketched" else fitted(model, "last-layer", n_train=2)
    atoms = rattled(ethanol(), 3, scale=0.1)
    batch = Batch.from_atoms([atoms], dtype=torch.float64)
    out = uncertainty_and_derivatives(model, uncertainty, batch)
    gradient = out["uncertainty_gradient"]
    reference = uncertainty.predict(model, batch)
    torch.testing.assert_close(out["forces"], reference["forces"], rtol=1e-10, atol=1e-12)
    h = 1e-5
    for i, k in [(0, 0), (2, 1), (5, 2), (8, 0)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd = (u_of(model, uncertainty, [plus]) - u_of(model, uncertainty, [minus])) / (2 * h)
        assert abs(float(fd[0]) - float(gradient[i, k])) < 1e-6 * max(1, abs(float(fd[0])))


def test_bias_stress_is_the_strain_derivative_of_u():
    model = make_model("painn")
    cell = bulk("Cu", "fcc", a=3.6).repeat((2, 2, 2))
    frames = [rattled(cell, 20 + k, scale=0.1) for k in range(2)]
    from stablemd.explore.uncertainty.estimator import Uncertainty
    from stablemd.explore.uncertainty.features import GradientFeatures
    from stablemd.explore.uncertainty.posterior import FeatureGram, Posterior

    features = GradientFeatures(model.gradient_feature_layers(), "sketched", 32)
    sums = FeatureGram(32)
    for frame in frames:
        batch = Batch.from_atoms([frame], dtype=torch.float64)
        with features.tape() as tape:
            from stablemd.models.potential import predict

            predict(model, batch, ("energy",), tape=tape)
        sums.add(features(tape).detach().mean(0, keepdim=True))
    posterior = Posterior.fit(sums)
    uncertainty = Uncertainty(features, posterior, posterior, 1.0, 1.0, "conformal", 0.05)
    atoms = rattled(cell, 7, scale=0.15)
    batch = Batch.from_atoms([atoms], dtype=torch.float64)
    out = uncertainty_and_derivatives(model, uncertainty, batch, stress=True)
    volume = atoms.get_volume()
    h = 1e-5
    for a, b in [(0, 0), (1, 2), (2, 2)]:
        values = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[a, b] += sign * h / 2
            strain[b, a] += sign * h / 2
            moved = atoms.copy()
            moved.set_cell(atoms.cell.array @ strain, scale_atoms=False)
            moved.positions = atoms.positions @ strain
            values.append(float(u_of(model, uncertainty, [moved])[0]))
        fd = (values[0] - values[1]) / (2 * h) / volume
        assert abs(fd - float(out["uncertainty_stress"][0, a, b])) < 1e-6 * max(1, abs(fd))
    # the force term for a barostat: the model's stress − τ_eff (∂u/∂ε)/V once the bias is on
    from dataclasses import replace

    from stablemd.md.starts import state_from_atoms

    state = state_from_atoms([atoms, rattled(cell, 8, scale=0.15)])
    term = UncertaintyBiasedForces(model, uncertainty, tau=0.5, window=1, stress=True)
    first = term(state)  # the burn-in: unbiased
    model_stress = ModelForces(model, stress=True)(state).stress
    torch.testing.assert_close(first.stress, model_stress, rtol=1e-10, atol=1e-12)
    second = term(replace(state, outputs=first.outputs))
    tau = second.outputs["bias_strength"][[0, 8]]
    assert float(tau.min()) > 0
    both = uncertainty_and_derivatives(model, uncertainty, state.batch(), stress=True)
    expected = model_stress - tau[:, None, None] * both["uncertainty_stress"]
    torch.testing.assert_close(second.stress, expected, rtol=1e-8, atol=1e-12)


def _langevin(state_seed=0):
    return make_integrator("langevin", 0.5, 300.0, 0.01, 100.0, seed=state_seed)


def test_tau_zero_is_bit_identical_to_unbiased_md(painn):
    model, uncertainty = painn
    starts = [rattled(ethanol(), k) for k in range(2)]
    state = initial_state(starts, 3, 300.0, seed=1)
    plain = run_steps(_langevin(), state, ModelForces(model), 10)
    biased = UncertaintyBiasedForces(model, uncertainty, tau=0.0)
    unbiased = run_steps(_langevin(), state, biased, 10)
    assert torch.equal(plain.positions, unbiased.positions)
    assert torch.equal(plain.velocities, unbiased.velocities)
    assert torch.equal(plain.potential_energy, unbiased.potential_energy)
    assert unbiased.outputs["atomic_uncertainty"].shape == (3 * 9,)


def test_adaptive_strength_burn_in_and_bias(painn):
    model, uncertainty = painn
    state = initial_state([rattled(ethanol(), 1)], 2, 300.0, seed=2)
    term = UncertaintyBiasedForces(model, uncertainty, tau=0.25, window=3)
    integrator = _langevin()
    state = integrator.prepare(state, term)
    for _ in range(2):  # the burn-in: three evaluations (the first, two steps) unbiased
        assert float(state.outputs["bias_strength"].abs().max()) == 0.0
        state = integrator.step(state, term)
    free = ModelForces(model)(state)
    torch.testing.assert_close(state.forces, free.forces, rtol=0, atol=1e-10)
    window = state.outputs["bias_window"]
    result = term(state)
    sums = state.sum_per_system(window.sum(2))  # the three unbiased evaluations
    expected = 0.25 * sums[:, 0].sqrt() / (sums[:, 1].sqrt() + 1e-8)
    torch.testing.assert_close(result.outputs["bias_strength"][[0, 9]], expected)
    batch = state.batch()
    gradient = uncertainty_and_derivatives(model, uncertainty, batch)["uncertainty_gradient"]
    bias = expected[state.system_index][:, None] * gradient
    torch.testing.assert_close(result.forces - free.forces, bias, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(result.energy, free.energy)  # reported unbiased
    # hydrogen weighs nothing: the ratio ignores hydrogen forces
    hydrogen = state.numbers == 1
    assert float(window[hydrogen].abs().max()) == 0.0 and float(window[~hydrogen].min()) > 0


def test_threshold_stops_the_replica_whose_atom_passes_it(painn):
    model, uncertainty = painn
    far = rattled(ethanol(), 11, scale=0.3)
    state = initial_state([ethanol()], 1, 300.0, seed=0)
    from stablemd.md.starts import state_from_atoms

    state = state_from_atoms([rattled(ethanol(), 10), far])  # a training structure, a far one
    result = UncertaintyBiasedForces(model, uncertainty, tau=0.0)(state)
    from dataclasses import replace

    state = replace(state, outputs=result.outputs)
    u = result.outputs["atomic_uncertainty"]
    threshold = float(u[9:].max()) * 0.99
    assert float(u[:9].max()) < threshold
    assert UncertaintyThreshold(threshold)(state).tolist() == [False, True]


def test_biased_run_resumes_exactly_and_stops_at_the_threshold(painn, tmp_path):
    """The adaptive window lives in the state, so a run continued from its checkpoint equals
    the uninterrupted one; a replica whose atomic u passes the threshold is frozen."""
    from stablemd.md.runner import run

    model, uncertainty = painn
    state = initial_state([rattled(ethanol(), k) for k in range(2)], 2, 300.0, seed=3)

    def biased_run(n_steps, checkpoint=None):
        term = UncertaintyBiasedForces(model, uncertainty, tau=0.5, window=3)
        return run(state, _langevin(), term, n_steps, checkpoint=checkpoint,
                   checkpoint_every=4, progress=False)  # fmt: skip

    straight = biased_run(8)
    biased_run(4, tmp_path / "c.pt")
    resumed = biased_run(8, tmp_path / "c.pt")
    assert torch.equal(straight.state.positions, resumed.state.positions)
    assert torch.equal(straight.state.outputs["bias_window"], resumed.state.outputs["bias_window"])
    assert float(straight.state.outputs["bias_strength"].min()) > 0  # biased after the burn-in
    u = straight.state.outputs["atomic_uncertainty"]
    threshold = 0.5 * min(float(u[:9].max()), float(u[9:].max()))  # both pass it
    term = UncertaintyBiasedForces(model, uncertainty, tau=0.0)
    stopped = run(straight.state, _langevin(), term, 1, [UncertaintyThreshold(threshold)],
                  progress=False)  # fmt: skip
    assert stopped.unstable_reason == ["uncertainty", "uncertainty"]


def test_a_biased_run_is_not_continued_with_a_refitted_uncertainty(painn, tmp_path):
    """The run record holds the uncertainty's fingerprint: the same weights with another fitted
    u (here last-layer features instead of sketched) give other bias forces, so the stored
    run is not resumed with them."""
    from stablemd.core.errors import InputError
    from stablemd.explore.uncertainty.estimator import attach_uncertainty
    from stablemd.simulation import SimulationSettings, simulate

    model, uncertainty = copy.deepcopy(painn[0]), painn[1]  # the module's model stays bare
    settings = SimulationSettings(
        replicas=1, time_ps=0.002, timestep_fs=0.5, every=2, checkpoint_every=2,
        bias_uncertainty=0.25,
    )  # fmt: skip
    attach_uncertainty(model, uncertainty)
    simulate(model, [ethanol()], settings, tmp_path, progress=False)
    simulate(model, [ethanol()], settings, tmp_path, progress=False)  # same u: continues
    attach_uncertainty(model, fitted(model, "last-layer", n_train=2))
    with pytest.raises(InputError, match="uncertainty"):
        simulate(model, [ethanol()], settings, tmp_path, progress=False)


def test_a_model_trained_with_direct_forces_only_is_not_biased_through_its_energy(painn):
    """Its plain runs take the direct head; biased MD would silently run −∂E/∂r instead."""
    from stablemd.core.errors import InputError
    from stablemd.explore.uncertainty.estimator import attach_uncertainty
    from stablemd.simulation import SimulationSettings

    direct_only = copy.deepcopy(painn[0])
    direct_only.metadata = {"training": {"config": {"forces": "direct"}}}
    attach_uncertainty(direct_only, painn[1])
    settings = SimulationSettings(bias_uncertainty=0.25)
    with pytest.raises(InputError, match="m.pt was trained with direct forces only"):
        settings.uncertainty_terms(direct_only, "m.pt")


@pytest.mark.parametrize("tau", [0.0, 0.25])
def test_a_biased_trajectory_reports_no_conserved_energy(painn, tmp_path, tau):
    """Forces of E − τ_eff·u with a τ_eff that changes conserve no E + K (+ bath) for analyze
    to call drift; τ = 0 is plain MD and keeps it."""
    from stablemd.explore.uncertainty.estimator import attach_uncertainty
    from stablemd.monitors.trajectory import read_replica
    from stablemd.simulation import SimulationSettings, simulate

    model = copy.deepcopy(painn[0])
    attach_uncertainty(model, painn[1])
    settings = SimulationSettings(
        replicas=1, time_ps=0.001, timestep_fs=0.5, every=1, bias_uncertainty=tau
    )
    done = simulate(model, [ethanol()], settings, tmp_path, progress=False)
    assert ("conserved_energy" in read_replica(done.trajectory, 0)) == (tau == 0)
