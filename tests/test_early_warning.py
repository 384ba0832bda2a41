"""The CLI-inspired early-warning index: the latent domain and its indicators, MaxVol, the
cumulative index with its critical level and saturation, and the MD monitor (resume, frozen
replicas)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import molecule
from md_support import rattled, single_thread  # noqa: F401
from scipy.spatial.transform import Rotation

from stablemd.core.errors import InputError
from stablemd.diagnose.early_warning import (
    LatentDomain,
    LatentInstabilityMonitor,
    calibrate_critical_level,
    cumulative_index,
    first_crossing,
    fit_latent_domain,
    is_saturated,
    latent_features,
    lead_times,
    maxvol,
    trailing_rate,
)
from stablemd.md.forces import ModelForces
from stablemd.md.integrators import BAOAB
from stablemd.md.runner import run
from stablemd.md.starts import initial_state, state_from_atoms
from stablemd.md.thermostats import LangevinNoise
from stablemd.models.painn import PaiNN

pytestmark = pytest.mark.usefixtures("single_thread")

CUTOFF_A = 4.0
#: The CO molecule sits this far (Å) from the ethanol: beyond the cutoff, so with one
#: interaction (receptive field = cutoff) neither molecule's features see the other.
SEPARATION_A = 12.0
TOLERANCE = 0.01


def f64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def tiny_painn(seed: int = 0) -> PaiNN:
    torch.manual_seed(seed)
    return PaiNN([1, 6, 8], cutoff=CUTOFF_A, n_features=8, n_interactions=1).double().eval()


def ethanol_and_co():
    """An ethanol (atoms 0–8) and a CO (C 9, O 10) beyond the cutoff from each other."""
    co = molecule("CO")
    co.positions += [SEPARATION_A, 0.0, 0.0]
    return molecule("CH3CH2OH") + co


@pytest.fixture(scope="module")
def fitted():
    """A tiny PaiNN, its training frames and its latent domain."""
    potential = tiny_painn()
    frames = rattled(ethanol_and_co(), 30, scale=0.05, seed=0)
    return potential, frames, fit_latent_domain(potential, frames, maxvol_tolerance=TOLERANCE)


# --- MaxVol and the domain ----------------------------------------------------------------


def test_maxvol_picks_the_dominant_rows_and_bounds_every_coefficient():
    rng = np.random.default_rng(0)
    k = 6
    rows = torch.as_tensor(rng.uniform(-1, 1, size=(300, k)))
    rows[[17, 50, 99, 150, 201, 260]] = 3.0 * torch.eye(k, dtype=torch.float64)  # maximal volume
    active = maxvol(rows, tolerance=TOLERANCE)
    assert sorted(active.tolist()) == [17, 50, 99, 150, 201, 260]
    gaussian = torch.as_tensor(rng.normal(size=(500, 8)))
    active = maxvol(gaussian, tolerance=TOLERANCE)
    coefficients = gaussian @ torch.linalg.inv(gaussian[active])
    assert float(coefficients.abs().max()) <= 1 + TOLERANCE
    with pytest.raises(ValueError, match="at least as many rows"):
        maxvol(gaussian[:5])


def test_training_atoms_are_inside_the_domain(fitted):
    potential, frames, domain = fitted
    assert set(domain.elements) == {1, 6, 8}
    assert all(d.rank == 8 for d in domain.elements.values())  # 60–180 atoms ≥ 8 features
    features, numbers = latent_features(potential, frames)
    assert not bool(domain.outside_box(features, numbers).any())
    grades = domain.grade(features, numbers)
    assert float(grades.max()) <= 1 + TOLERANCE
    assert not bool(domain.indicator(features, numbers).any())
    for z, element in domain.elements.items():
        atoms = features[numbers == z][element.active_rows]
        # b A⁻¹ of an active-set atom is a unit vector: its grade is exactly one
        coefficients = atoms @ element.basis @ element.inverse
        unit = torch.eye(element.rank, dtype=torch.float64)
        assert torch.allclose(coefficients.abs(), unit, atol=1e-9)


def test_a_compressed_pair_is_flagged_on_exactly_its_atoms(fitted):
    """CO squeezed to 0.3 Å: PaiNN's radial filters grow as 1/r, so both atoms' features leave
    the training range; the ethanol, an exact training copy beyond the cutoff, is untouched."""
    potential, frames, domain = fitted
    atoms = frames[3].copy()
    c, o = 9, 10
    bond = atoms.positions[o] - atoms.positions[c]
    atoms.positions[o] = atoms.positions[c] + 0.3 * bond / np.linalg.norm(bond)
    features, numbers = latent_features(potential, [atoms])
    for method in ("box", "grade"):
        flagged = torch.nonzero(domain.indicator(features, numbers, method))[:, 0].tolist()
        assert flagged == [c, o], method
    assert float(domain.grade(features, numbers)[:9].max()) <= 1 + TOLERANCE


def test_indicators_are_invariant_to_permutation_and_rotation(fitted):
    potential, frames, domain = fitted
    atoms = rattled(ethanol_and_co(), 1, scale=0.15, seed=5)[0]
    atoms.positions[10] = atoms.positions[9] + [0.5, 0.0, 0.0]  # a compressed CO: some flags
    features, numbers = latent_features(potential, [atoms])
    grade, box = domain.grade(features, numbers), domain.outside_box(features, numbers)
    assert bool(box.any()) and not bool(box.all())

    order = np.random.default_rng(1).permutation(len(atoms))
    f_perm, z_perm = latent_features(potential, [atoms[order]])
    assert torch.allclose(domain.grade(f_perm, z_perm), grade[order], rtol=1e-9, atol=1e-12)
    assert torch.equal(domain.outside_box(f_perm, z_perm), box[order])

    turned = atoms.copy()
    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0])
    turned.positions = rotation.apply(atoms.positions) + [1.0, -2.0, 0.5]
    f_rot, z_rot = latent_features(potential, [turned])
    assert torch.allclose(domain.grade(f_rot, z_rot), grade, rtol=1e-9, atol=1e-12)
    assert torch.equal(domain.outside_box(f_rot, z_rot), box)


def test_an_element_with_fewer_atoms_than_features_uses_the_span_it_has():
    rng = np.random.default_rng(2)
    span = torch.as_tensor(rng.normal(size=(3, 8)))
    training = torch.as_tensor(rng.uniform(-1, 1, size=(5, 3))) @ span  # 5 atoms, rank 3
    domain = LatentDomain.fit(training, torch.full((5,), 8), maxvol_tolerance=TOLERANCE)
    element = domain.elements[8]
    assert element.rank == 3 and element.n_training == 5
    numbers = torch.full((1,), 8)
    assert float(domain.grade(training, torch.full((5,), 8)).max()) <= 1 + TOLERANCE
    inside = 0.5 * (training[0] + training[1])  # in the span, between two training atoms
    assert float(domain.grade(inside[None], numbers)[0]) <= 1 + TOLERANCE
    off_span = inside + 1e-3 * torch.as_tensor(rng.normal(size=8))  # leaves the span
    assert float(domain.grade(off_span[None], numbers)[0]) > 100
    far = -5.0 * training[element.active_rows[0]]  # an active atom's features, × −5
    assert float(domain.grade(far[None], numbers)[0]) == pytest.approx(5.0)


def test_with_each_training_atom_a_direction_of_its_own_the_scale_is_left_one_out():
    """5 generic atoms in 8 features: every held-out atom has a part outside their span, so
    that part is judged against the largest distance of a training atom from the others."""
    rng = np.random.default_rng(3)
    training = torch.as_tensor(rng.normal(size=(5, 8)))
    domain = LatentDomain.fit(training, torch.full((5,), 1), maxvol_tolerance=TOLERANCE)
    distances = []
    for i in range(5):  # by brute force: the residual of a least-squares fit by the others
        others = torch.cat([training[:i], training[i + 1 :]])
        fit = torch.linalg.lstsq(others.T, training[i]).solution
        distances.append(float(torch.linalg.vector_norm(training[i] - others.T @ fit)))
    scale = max(distances)
    assert domain.elements[1].residual_scale == pytest.approx(scale)
    q, _ = torch.linalg.qr(torch.cat([training.T, torch.as_tensor(rng.normal(size=(8, 1)))], 1))
    normal = q[:, 5]  # a unit vector orthogonal to every training atom
    numbers = torch.full((2,), 1)
    near = torch.stack([training[0] + 0.5 * scale * normal, training[0] + 3.0 * scale * normal])
    assert domain.grade(near, numbers).tolist() == pytest.approx([1.0, 3.0])


def test_the_domain_round_trips_through_a_file_and_refuses_what_it_cannot_judge(fitted, tmp_path):
    potential, frames, domain = fitted
    path = tmp_path / "domain.pt"
    torch.save(domain.state_dict(), path)
    again = LatentDomain.from_state_dict(torch.load(path, weights_only=True))
    features, numbers = latent_features(potential, frames[:3])
    features = features + 0.3 * torch.randn(features.shape, dtype=torch.float64)
    assert torch.equal(again.grade(features, numbers), domain.grade(features, numbers))
    assert torch.equal(again.outside_box(features, numbers), domain.outside_box(features, numbers))
    assert again.grade_threshold == domain.grade_threshold and again.model == domain.model
    again.check_model(potential)
    with pytest.raises(InputError, match="another model"):
        again.check_model(tiny_painn(seed=1))
    with pytest.raises(InputError, match="8 features per atom"):
        domain.grade(features[:, :4], numbers)
    with pytest.raises(InputError, match="no training atoms of N"):
        domain.grade(features[:1], torch.tensor([7]))
    with pytest.raises(InputError, match="not a stablemd latent domain"):
        LatentDomain.from_state_dict({"elements": {}})
    damaged = domain.state_dict()
    del damaged["elements"][8]["inverse"]
    with pytest.raises(InputError, match="damaged"):
        LatentDomain.from_state_dict(damaged)
    broken = features[:2].clone()
    broken[0, 3] = float("nan")
    assert domain.grade(broken, numbers[:2])[0] == math.inf
    assert bool(domain.outside_box(broken, numbers[:2])[0])
    with pytest.raises(InputError, match="non-finite"):
        LatentDomain.fit(broken, numbers[:2])


# --- the index ----------------------------------------------------------------------------


def test_cumulative_index_is_the_right_riemann_sum_of_the_flags():
    times = torch.tensor([0.0, 0.5, 1.0, 2.0])
    flags = torch.tensor([[1, 0], [1, 0], [0, 1], [1, 1]])
    expected = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [1.5, 1.5]], dtype=torch.float64)
    assert torch.equal(cumulative_index(flags, times), expected)
    with pytest.raises(InputError, match="increase"):
        cumulative_index(flags, torch.tensor([0.0, 1.0, 1.0, 2.0]))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        cumulative_index(flags * 2, times)


def test_critical_level_crossing_and_lead_time_on_known_lines():
    times = torch.linspace(0, 10, 101, dtype=torch.float64)
    good = torch.stack([0.01 * times, 0.02 * times, 0.03 * (1 - torch.exp(-times))], dim=1)
    level = calibrate_critical_level(times, good)  # the largest at 10 ps: 0.2 ps
    assert level.level_ps == pytest.approx(0.2) and level.calibration_ps == 10.0
    assert torch.allclose(level.at(torch.tensor([5.0, 20.0])), f64([0.2, 0.4]))
    # replica 0 grows at 0.1/ps: above 0.2 ps after 2 ps; replica 1 stays below; replica 2
    # fails at 6 ps after growing at 0.05/ps (crosses after 4 ps), NaN after its end
    run_cli = torch.stack([0.1 * times, 0.01 * times, 0.05 * times], dim=1)
    run_cli[61:, 2] = float("nan")
    crossing = first_crossing(times, run_cli, level)
    assert crossing[0].item() == pytest.approx(2.1)
    assert math.isnan(crossing[1].item())
    assert crossing[2].item() == pytest.approx(4.1)
    lead = lead_times(crossing, torch.tensor([float("nan"), float("nan"), 6.0]))
    assert lead[2].item() == pytest.approx(1.9) and math.isnan(lead[0].item())
    with pytest.raises(InputError, match="stopped early"):
        calibrate_critical_level(times, run_cli)
    # the floor: runs that never flag give floor × T_cal, runs above it keep their own level
    quiet = calibrate_critical_level(
        times, torch.zeros(101, 2, dtype=torch.float64), 1.0, 1.0, 0.01
    )
    assert quiet.level_ps == pytest.approx(0.1)
    assert calibrate_critical_level(times, good, floor_fraction=0.01).level_ps == pytest.approx(0.2)
    with pytest.raises(InputError, match="floor_fraction"):
        calibrate_critical_level(times, good, floor_fraction=1.5)
    interior = run_cli.clone()
    interior[10, 0] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        first_crossing(times, interior, level)


def test_saturation_tells_a_levelling_index_from_a_growing_one():
    times = torch.linspace(0, 1000, 1001, dtype=torch.float64)  # 1 ns
    growing = 0.001 * times
    levelling = 0.2 * (1 - torch.exp(-times / 50.0))
    slowing = 0.5 * torch.sqrt(times)  # its last 200 ps grow at 0.53 × its average rate
    never = torch.zeros_like(times)
    cli = torch.stack([growing, levelling, slowing, never], dim=1)
    rates = trailing_rate(times, cli, window_ps=200.0)
    assert rates[0].item() == pytest.approx(0.001)
    assert rates[1].item() == pytest.approx(0.2 * (math.exp(-16) - math.exp(-20)) / 200)
    assert is_saturated(times, cli, 200.0).tolist() == [False, True, False, True]
    # with a relative tolerance above 0.53 the square root counts as levelling off too
    assert is_saturated(times, cli, 200.0, relative_tolerance=0.5).tolist()[2] is False
    assert is_saturated(times, cli, 200.0, relative_tolerance=0.6).tolist()[2] is True
    # an absolute tolerance above the linear rate accepts it
    assert is_saturated(times, cli, 200.0, tolerance=0.002).tolist()[0] is True
    # too short a record is not judged saturated
    assert is_saturated(times[:100], cli[:100], 200.0).tolist() == [False] * 4
    ended = cli.clone()
    ended[500:, 1] = float("nan")  # a frozen replica is judged on its own last 200 ps
    assert trailing_rate(times, ended, 200.0)[1].item() == pytest.approx(
        0.2 * (math.exp(-299 / 50) - math.exp(-499 / 50)) / 200
    )


# --- the monitor --------------------------------------------------------------------------


def fake_state(features, active, time_fs):
    """Two replicas of the ethanol+CO layout, with given features and active flags."""
    state = state_from_atoms([ethanol_and_co()] * 2)
    state.outputs["features"] = features
    state.active = torch.tensor(active)
    state.time_fs = time_fs
    return state


def test_the_monitor_accumulates_flagged_time_and_skips_frozen_replicas(fitted):
    potential, frames, domain = fitted
    inside, numbers = latent_features(potential, frames[:2])  # training atoms: H = 0
    outside = inside.clone()
    outside[[0, 3, 11 + 9]] *= 50.0  # atoms 0 and 3 of replica 0, atom 9 of replica 1
    monitor = LatentInstabilityMonitor(domain, every=1)
    monitor(fake_state(outside, [True, True], 100.0))  # the first call adds no time
    assert torch.equal(monitor.replica_index_ps(), torch.zeros(2, dtype=torch.float64))
    monitor(fake_state(outside, [True, True], 110.0))  # 10 fs = 0.01 ps flagged
    expected_atoms = torch.zeros(22, dtype=torch.float64)
    expected_atoms[[0, 3, 20]] = 0.01
    assert torch.allclose(monitor.atom_index_ps, expected_atoms)
    assert torch.allclose(monitor.replica_index_ps(), f64([0.02, 0.01]) / 11)
    monitor(fake_state(outside, [True, False], 130.0))  # replica 1 frozen: unchanged
    expected_atoms[[0, 3]] = 0.03
    assert torch.allclose(monitor.atom_index_ps, expected_atoms)
    monitor(fake_state(inside, [True, False], 140.0))  # back inside: no more growth
    monitor(fake_state(outside, [True, True], 150.0))  # replica 1 active again: its frozen
    expected_atoms[[0, 3]] = 0.04  # time does not count, only what follows
    assert torch.allclose(monitor.atom_index_ps, expected_atoms)
    monitor(fake_state(outside, [True, True], 155.0))
    expected_atoms[[0, 3]], expected_atoms[20] = 0.045, 0.015
    assert torch.allclose(monitor.atom_index_ps, expected_atoms)
    series = monitor.series()
    assert torch.allclose(series["times_ps"], f64([0.1, 0.11, 0.13, 0.14, 0.15, 0.155]))
    assert torch.allclose(series["cli_ps"][:4, 0], f64([0, 0.02, 0.06, 0.06]) / 11)
    assert series["cli_ps"][1, 1].item() == pytest.approx(0.01 / 11)
    assert bool(series["cli_ps"][2:4, 1].isnan().all())
    assert series["cli_ps"][4, 1].item() == pytest.approx(0.01 / 11)
    assert bool((series["max_grade"][:3, 0] > domain.grade_threshold).all())
    assert series["max_grade"][3, 0].item() <= 1 + TOLERANCE
    assert bool(series["max_grade"][2:4, 1].isnan().all())
    # the box indicator alone (a grade threshold nothing reaches)
    lenient = LatentDomain.from_state_dict({**domain.state_dict(), "grade_threshold": 1e9})
    box = LatentInstabilityMonitor(lenient, indicator="box")
    box(fake_state(outside, [True, True], 0.0))
    box(fake_state(outside, [True, True], 10.0))
    assert torch.allclose(box.atom_index_ps, 0.01 * (expected_atoms > 0).double())
    with pytest.raises(InputError, match="no latent features"):
        box(state_from_atoms([ethanol_and_co()] * 2))


def md_run(potential, domain, n_steps, checkpoint=None, start=None):
    """Langevin MD at 900 K of three replicas with the monitor every 2 steps."""
    frames = rattled(ethanol_and_co(), 3, scale=0.05, seed=3)
    state = initial_state(frames, 3, 900.0, seed=0) if start is None else start
    monitor = LatentInstabilityMonitor(domain, every=2)
    forces = ModelForces(potential, outputs=("features",))
    integrator = BAOAB(0.5, LangevinNoise(900.0, 0.01, seed=4))
    result = run(
        state, integrator, forces, n_steps, [monitor], checkpoint=checkpoint, progress=False
    )
    return monitor, result


def test_the_index_grows_monotonically_in_md_and_resumes_exactly(tmp_path):
    potential = tiny_painn()
    frames = rattled(ethanol_and_co(), 10, scale=0.02, seed=0)  # a narrow domain: MD leaves it
    domain = fit_latent_domain(potential, frames, maxvol_tolerance=TOLERANCE)
    whole, _ = md_run(potential, domain, 60)
    series = whole.series()
    assert len(series["times_ps"]) == 31
    assert bool((series["cli_ps"].diff(dim=0) >= 0).all())
    assert float(series["cli_ps"][-1].min()) > 0  # every replica spent time outside
    checkpoint = tmp_path / "md.pt"
    md_run(potential, domain, 30, checkpoint)
    resumed, _ = md_run(potential, domain, 60, checkpoint)
    assert torch.equal(resumed.atom_index_ps, whole.atom_index_ps)
    for key, value in resumed.series().items():
        assert torch.equal(value, series[key]), key
