"""Direct-force MD and multiple time stepping: the direct head as a force term, the conservative
correction, RESPA through ``model_force_term``, the settings, and the command line."""

from __future__ import annotations

import json

import pytest
import torch
from ase.build import molecule
from md_support import PairLJ, argon_state, run_steps, single_thread  # noqa: F401
from pydantic import ValidationError

from stablemd.cli.main import main
from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.diagnose.stability.benchmark import StabilitySettings, run_stability
from stablemd.fix.stable_training.config import StableConfig
from stablemd.md.forces import (
    ConservativeCorrection,
    DirectForces,
    ForceLevels,
    ForceResult,
    ModelForces,
    model_force_term,
)
from stablemd.md.integrators import BAOAB, RESPA, VelocityVerlet
from stablemd.md.runner import run
from stablemd.md.settings import MDSettings
from stablemd.md.starts import state_from_atoms
from stablemd.md.velocities import maxwell_boltzmann
from stablemd.models.painn import PaiNN
from stablemd.models.potential import predict
from stablemd.models.registry import save_potential
from stablemd.monitors.trajectory import read_replica
from stablemd.systems import get_system

pytestmark = pytest.mark.usefixtures("single_thread")

ARGON_T_K = 20.0
BOTH = {"training": {"config": {"forces": "both"}}}


class CurlLJ(PairLJ):
    """Lennard-Jones with a direct-force head: −∇E, taken by autograd exactly as ``predict``
    takes the conservative forces (so with ``curl = 0`` the two are equal bit for bit), plus
    ``curl`` · ẑ × (r_i − c), c the replica's centroid: a non-conservative field with no net
    force whose torque pumps energy into direct-force MD. Trained "both" (both heads)."""

    kind = "curl-lj-test"
    supports_direct_forces = True

    def __init__(self, curl: float = 0.0):
        super().__init__()
        self.curl = curl
        self.metadata = BOTH

    def raw_outputs(self, batch, neighbors, direct_forces, features, once_differentiable=False):
        out = super().raw_outputs(batch, neighbors, False, False)
        if direct_forces:
            with torch.enable_grad():  # DirectForces calls the model under no_grad
                x = batch.positions.detach().requires_grad_(True)
                work = Batch(x, batch.numbers, batch.system_index, batch.cell, batch.pbc)
                energies = PairLJ.raw_outputs(self, work, neighbors, False, False)
                (gradient,) = torch.autograd.grad(energies["raw_energies"].sum(), x)
            self.atoms_evaluated -= batch.n_atoms  # one model call, counted once
            counts = torch.bincount(batch.system_index).to(x.dtype)
            centroid = batch.sum_per_system(batch.positions) / counts[:, None]
            offset = batch.positions - centroid[batch.system_index]
            axis = offset.new_tensor([0.0, 0.0, 1.0]).expand_as(offset)
            out["raw_direct_forces"] = -gradient + self.curl * torch.linalg.cross(axis, offset)
        return out


class NoForces:
    """A force term that is zero everywhere."""

    def __call__(self, state):
        return ForceResult(
            torch.zeros(state.n_systems, dtype=torch.float64), torch.zeros_like(state.positions)
        )


@pytest.fixture(scope="module")
def painn():
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1).double()
    model.metadata = BOTH
    # The first fused-kernel call of a process on one thread may round differently from the
    # later ones (last bit; seen on this machine), so the comparisons start after one call.
    predict(model, ethanol_state(1).batch(), ("energy", "forces", "direct_forces"))
    return model


def ethanol_state(n_replicas: int):
    state = state_from_atoms([molecule("CH3CH2OH")] * n_replicas)
    noise = torch.randn(state.positions.shape, generator=torch.Generator().manual_seed(1))
    state.positions = state.positions + 0.05 * noise.double()
    return state


def warm_argon(n_replicas: int):
    return maxwell_boltzmann(argon_state(n_replicas), ARGON_T_K, 0)


# -- force terms ----------------------------------------------------------------------------------


def test_direct_forces_are_the_direct_head_and_its_energy(painn):
    state = ethanol_state(3)
    result = DirectForces(painn, outputs=("features",))(state)
    reference = predict(painn, state.batch(), ("energy", "direct_forces", "features"))
    assert torch.equal(result.forces, reference["direct_forces"])
    assert torch.equal(result.energy, reference["energy"])
    assert torch.equal(result.outputs["features"], reference["features"])
    conservative = ModelForces(painn)(state).forces
    assert not torch.allclose(result.forces, conservative, atol=1e-3)  # an untrained head


def test_correction_adds_up_to_the_conservative_forces(painn):
    state = ethanol_state(3)
    conservative = ModelForces(painn)(state)
    correction = ConservativeCorrection(painn)(state)
    direct = DirectForces(painn)(state)
    assert torch.equal(correction.energy, torch.zeros(3, dtype=torch.float64))
    assert torch.allclose(direct.forces + correction.forces, conservative.forces, atol=1e-12)
    levels = model_force_term(painn, mts=4)(state)
    assert torch.allclose(levels.forces, conservative.forces, atol=1e-12)
    assert torch.allclose(levels.energy, conservative.energy, atol=1e-12)
    assert torch.equal(levels.outputs[ForceLevels.FAST], direct.forces)


@pytest.mark.parametrize("make", [DirectForces, ConservativeCorrection, ModelForces])
def test_frozen_replicas_get_zeros_and_cost_nothing(make):
    model = CurlLJ(curl=1e-3)
    state = warm_argon(4)
    state.positions = state.positions + 0.3 * state.velocities  # off the minimum
    everyone = make(model)(state)
    state.active = torch.tensor([True, False, False, True])
    model.atoms_evaluated = 0
    some = make(model)(state)
    assert model.atoms_evaluated == 2 * 13
    atoms = state.active_atoms
    assert torch.equal(some.forces[~atoms], torch.zeros_like(some.forces[~atoms]))
    assert torch.equal(some.energy[~state.active], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(some.forces[atoms], everyone.forces[atoms], atol=1e-12)
    assert some.forces[atoms].abs().max() > 1e-4
    state.active[:] = False
    model.atoms_evaluated = 0
    none = make(model)(state)
    assert model.atoms_evaluated == 0 and not bool(none.forces.any())


def test_the_outer_step_shares_one_forward_pass():
    """M − 1 direct-only calls and one shared call per outer step: M model calls, not M + 1
    (through the runner, which wraps each level to time it)."""
    model = CurlLJ(curl=1e-3)
    term = model_force_term(model, mts=4)
    model.atoms_evaluated = 0
    result = run(warm_argon(2), RESPA(10.0, 4), term, 5, progress=False)
    assert result.state.step == 5
    assert model.atoms_evaluated == (1 + 5 * 4) * 2 * 13


def test_force_term_follows_what_the_model_was_trained_for(painn):
    assert isinstance(model_force_term(painn), ModelForces)  # "both": conservative
    direct = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    direct.metadata = {"training": {"config": {"forces": "direct"}}}
    assert isinstance(model_force_term(direct), DirectForces)
    assert isinstance(model_force_term(direct, "conservative"), ModelForces)
    with pytest.raises(InputError, match="d.pt was trained with direct forces only"):
        model_force_term(direct, mts=4, model="d.pt")  # its −∂E/∂r was never fit to forces
    tuned = PaiNN([1, 6, 8], n_features=8, n_interactions=1)  # conservative, direct term kept
    tuned.metadata = {"training": {"config": {"forces": "conservative",
                                              "direct_forces_weight": 1.0}}}  # fmt: skip
    assert isinstance(model_force_term(tuned, mts=4), ForceLevels)
    untrained = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    assert isinstance(model_force_term(untrained), ModelForces)
    for forces, mts in (("direct", None), (None, 4)):
        with pytest.raises(InputError, match="m.pt was trained with conservative forces only"):
            model_force_term(untrained, forces, mts, model="m.pt")
    no_head = PairLJ()
    no_head.metadata = BOTH
    with pytest.raises(InputError, match="has no direct-force head"):
        model_force_term(no_head, mts=2)
    with pytest.raises(InputError, match="leave forces unset"):
        model_force_term(painn, "conservative", 2)


# -- RESPA through model_force_term ------------------------------------------------------------


def test_respa_with_one_inner_step_is_velocity_verlet_with_the_sum(painn):
    term = model_force_term(painn, mts=1)
    start = maxwell_boltzmann(ethanol_state(2), 300.0, 0)
    respa = run_steps(RESPA(0.5, 1), start, term, 20)
    verlet = run_steps(VelocityVerlet(0.5), start, term, 20)
    for field in ("positions", "velocities", "forces"):
        assert torch.equal(getattr(respa, field), getattr(verlet, field)), field
    conservative = run_steps(VelocityVerlet(0.5), start, ModelForces(painn), 20)
    assert (respa.positions - start.positions).abs().max() > 1e-3
    assert torch.allclose(respa.positions, conservative.positions, atol=1e-10)


def test_respa_with_zero_correction_is_velocity_verlet_at_the_inner_step():
    """Direct head = −∇E bit for bit, so the correction is exactly zero: 5 outer steps of
    4 × 10 fs are 20 velocity-Verlet steps of 10 fs with the direct forces."""
    model = CurlLJ(curl=0.0)
    start = warm_argon(3)
    term = model_force_term(model, mts=4)
    assert not bool(term.slow(start).forces.any())
    outer = run_steps(RESPA(10.0, 4), start, term, 5)
    inner = run_steps(VelocityVerlet(10.0), start, DirectForces(model), 20)
    assert torch.equal(outer.positions, inner.positions)
    assert torch.equal(outer.velocities, inner.velocities)
    assert outer.step == 5 and outer.time_fs == pytest.approx(200.0)


def test_respa_with_only_slow_forces_is_velocity_verlet_at_the_outer_step():
    """No fast force: the merged outer kicks carry M × the slow forces, so one RESPA step of
    4 × 5 fs is one velocity-Verlet step of 20 fs."""
    model = CurlLJ()
    start = warm_argon(2)
    start.positions = start.positions + 2.0 * start.velocities
    levels = ForceLevels(NoForces(), ModelForces(model))
    respa = run_steps(RESPA(5.0, 4), start, levels, 3)
    verlet = run_steps(VelocityVerlet(20.0), start, ModelForces(model), 3)
    assert (verlet.velocities - start.velocities).abs().max() > 1e-6
    assert torch.allclose(respa.positions, verlet.positions, rtol=0, atol=1e-12)
    assert torch.allclose(respa.velocities, verlet.velocities, rtol=0, atol=1e-14)


def test_respa_conserves_energy_like_velocity_verlet_at_the_inner_step():
    """Ar13 at 20 K whose direct head has a curl (10⁻³ eV/Å²): direct-force MD at 10 fs heats
    by ≈ 11 k_B T in 1 ps; MTS (4 × 10 fs, correction every 40 fs) keeps E + K within
    ≈ 0.023 k_B T, the error of conservative velocity Verlet at 10 fs, while conservative
    Verlet at 40 fs errs by ≈ 0.4 k_B T."""
    model = CurlLJ(curl=1e-3)
    start = warm_argon(4)

    def error(integrator, term, steps_per_sample):
        state, energies = integrator.prepare(start, term), []
        for _ in range(25):
            state = run_steps(integrator, state, term, steps_per_sample)
            energies.append(integrator.conserved_energy(state))
        energies = torch.stack(energies)
        return (energies - energies[0]).abs().max().item() / (KB_EV_PER_K * ARGON_T_K)

    inner = error(VelocityVerlet(10.0), ModelForces(model), 4)
    outer = error(VelocityVerlet(40.0), ModelForces(model), 1)
    direct = error(VelocityVerlet(10.0), DirectForces(model), 4)
    mts = error(RESPA(10.0, 4), model_force_term(model, mts=4), 1)
    assert mts < 1.2 * inner
    assert outer > 5 * mts
    assert direct > 100 * mts


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("thermostat", ["nve", "langevin", "nose-hoover", "csvr"])
def test_settings_build_respa_around_every_thermostat(thermostat):
    plain = MDSettings(thermostat=thermostat, timestep_fs=0.5)
    settings = MDSettings(thermostat=thermostat, timestep_fs=0.5, mts=8)
    integrator = settings.integrator()
    assert isinstance(integrator, RESPA) and integrator.n_inner == 8
    assert integrator.step_fs == settings.step_fs == 4.0 and plain.step_fs == 0.5
    bath = plain.integrator().thermostat
    assert type(integrator.thermostat) is type(bath)
    assert isinstance(plain.integrator(), BAOAB if thermostat == "langevin" else VelocityVerlet)


def test_settings_refuse_two_force_schemes_and_stable_refuses_both():
    with pytest.raises(ValidationError, match="leave --forces"):
        MDSettings(mts=2, forces="direct")
    with pytest.raises(ValidationError, match="forces"):
        MDSettings(forces="dierct")
    for options in ({"mts": 2}, {"forces": "direct"}):
        with pytest.raises(ValidationError, match="StABlE simulates and trains conservative"):
            StableConfig(**options)
    assert StableConfig(forces="conservative").forces == "conservative"


def test_stability_run_counts_outer_steps_and_refuses_another_mts(painn, tmp_path):
    system = get_system("ethanol")
    settings = StabilitySettings(
        replicas=2, time_ps=0.004, timestep_fs=0.5, mts=4, check_every=1, thermostat="nve"
    )
    result = run_stability(painn, system, [system.atoms], settings, tmp_path, progress=False)
    assert result.summary.run_length_ps == pytest.approx(0.004)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["state"]
    assert state["step"] == 2 and state["time_fs"] == pytest.approx(4.0)  # 2 × (4 × 0.5 fs)
    assert json.loads((tmp_path / "settings.json").read_text())["mts"] == 4
    with pytest.raises(InputError, match="mts=4, not 2"):
        other = settings.model_copy(update={"mts": 2})
        run_stability(painn, system, [system.atoms], other, tmp_path, progress=False)


# -- command line ----------------------------------------------------------------------------


def cli(argv, capsys) -> tuple[int, str]:
    """``stablemd argv`` in-process: exit code and stderr."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.strip()


@pytest.fixture()
def models(tmp_path):
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    model.energy_scaling.scale.fill_(0.1)
    save_potential(model, tmp_path / "both.pt", metadata=BOTH)
    save_potential(model, tmp_path / "conservative.pt")
    return tmp_path


def test_simulate_with_mts_records_it_and_refuses_another(models, capsys):
    out = models / "run"
    args = ["simulate", "--model", str(models / "both.pt"), "--system", "ethanol",
            "--out", str(out), "--replicas", "2", "--time-ps", "0.01", "--timestep", "0.5",
            "--every", "5", "--thermostat", "nose-hoover", "--no-progress"]  # fmt: skip
    code, err = cli([*args, "--mts", "2"], capsys)
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    assert record["mts"] == 2 and record["forces"] is None
    frames = read_replica(out / "trajectory.h5", 1)
    assert frames["step"].tolist() == [0, 5, 10]  # outer steps of 2 × 0.5 fs
    assert frames["time_fs"].tolist() == pytest.approx([0.0, 5.0, 10.0])

    code, err = cli([*args, "--mts", "4"], capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert "mts=2, not 4" in err
    code, err = cli(args, capsys)
    assert code == 2 and "mts=2, not None" in err


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--mts", "2"], "conservative.pt was trained with conservative forces only"),
        (["--forces", "direct"], "conservative.pt was trained with conservative forces only"),
        (["--forces", "sideways"], "--forces 'sideways'"),
        (["--mts", "0"], "--mts 0"),
    ],
)
@pytest.mark.parametrize("command", ["simulate", "stability"])
def test_direct_forces_of_an_untrained_head_are_refused(models, capsys, command, options, fragment):
    args = [command, "--model", str(models / "conservative.pt"), "--system", "ethanol",
            "--out", str(models / "run"), "--replicas", "2", "--time-ps", "0.005",
            "--no-progress"]  # fmt: skip
    code, err = cli([*args, *options], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert fragment in err
    assert not (models / "run").exists()
