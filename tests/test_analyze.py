"""``stablemd analyze``: pooled observables of simulate's trajectories against direct
computations, the MSD, VACF and D of trajectories with known motion, and refused input."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms
from md_support import single_thread  # noqa: F401

from stablemd.analysis.dynamics import to_cm2_per_s
from stablemd.analysis.structure import distance_histogram_h_r, radial_distribution, rdf_range
from stablemd.cli.main import main
from stablemd.diagnose.trajectory.analysis import analyze_trajectory
from stablemd.diagnose.trajectory.plots import write_plots
from stablemd.md.starts import state_from_atoms
from stablemd.models.painn import PaiNN
from stablemd.models.registry import save_potential
from stablemd.monitors.trajectory import TrajectoryWriter

pytestmark = pytest.mark.usefixtures("single_thread")

PNG = b"\x89PNG\r\n\x1a\n"


def _stablemd(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return 0 if exit_info.value.code is None else exit_info.value.code


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1)
    model.energy_scaling.scale.fill_(0.1)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_potential(model, path)
    return path


def _simulate(model_file, out, system, *extra) -> str:
    args = ["simulate", "--model", str(model_file), "--system", system, "--out", str(out),
            "--replicas", "3", "--no-progress", *extra]  # fmt: skip
    assert _stablemd(args) == 0
    return str(out / "trajectory.h5")


def _frames_from_h5py(path):
    """Every replica's positions [T_k, N, 3] read directly, with species and box of replica 0."""
    with h5py.File(path, "r") as f:
        replicas = [f[f"particles/replica_{k}"] for k in range(len(f["particles"]))]
        positions = [r["position/value"][()] for r in replicas]
        return positions, replicas[0]["species"][()], replicas[0]["box/edges"][()]


def test_analyze_pools_a_simulated_molecule(model_file, tmp_path, capsys):
    trajectory = _simulate(
        model_file, tmp_path / "md", "ethanol", "--time-ps", "0.02", "--every", "2",
        "--velocities",
    )  # fmt: skip
    out = tmp_path / "analysis"
    assert _stablemd(["analyze", trajectory, "--out", str(out), "--window-ps", "0.01"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "analysis.json").read_text())
    for name in ("h_r.png", "bonds.png", "vacf.png", "energies.png"):
        assert (out / name).read_bytes()[:8] == PNG
        assert name in printed
    assert not (out / "rdf.png").exists() and not (out / "msd.png").exists()  # a molecule
    assert result["rdf"] is None and result["diffusivity_cm2_per_s"] is None

    positions, _, _ = _frames_from_h5py(trajectory)
    frames = torch.as_tensor(np.concatenate(positions))
    assert result["frames_analysed"] == result["distribution_frames"] == len(frames) == 3 * 21
    r, h = distance_histogram_h_r(frames, 10.0, sigma=0.0)  # analyze's plain histograms
    np.testing.assert_allclose(result["h_r"]["r_A"], r.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(result["h_r"]["h_per_A"], h.mean(0).numpy(), rtol=0, atol=1e-12)

    assert set(result["bond_lengths"]["density_per_A"]) == {"C-C", "C-H", "C-O", "O-H"}
    assert result["bond_lengths"]["mean_A"]["O-H"] == pytest.approx(0.97, abs=0.15)
    for density in result["bond_angles"]["density_per_deg"].values():
        assert sum(density) * 1.0 == pytest.approx(1.0, abs=1e-6)  # 1° bins, all in 0–180°
    vacf = result["vacf"]
    assert set(vacf["c"]) == {"all", "C", "H", "O"}
    assert vacf["lag_fs"][:2] == [0.0, 1.0]  # frames every 2 steps of 0.5 fs
    for curve in vacf["c"].values():
        assert curve[0] == pytest.approx(1.0, abs=1e-12)
        assert len(curve) == 11  # lags 0 … 10 fs
    per_replica = result["per_replica"]
    assert [row["frames_analysed"] for row in per_replica] == [21, 21, 21]
    assert all(row["temperature_mean_K"] > 0 for row in per_replica)


def test_analyze_pools_the_rdfs_and_msd_of_a_simulated_water_box(model_file, tmp_path):
    md = tmp_path / "md"
    trajectory = _simulate(model_file, md, "water", "--time-ps", "0.01", "--every", "2")
    out = tmp_path / "analysis"
    args = ["analyze", trajectory, "--out", str(out), "--window-ps", "0.004", "--system", "water",
            "--stride", "2"]  # fmt: skip
    assert _stablemd(args) == 0
    result = json.loads((out / "analysis.json").read_text())
    for name in ("h_r.png", "rdf.png", "bonds.png", "msd.png", "energies.png"):
        assert (out / name).read_bytes()[:8] == PNG
    assert not (out / "vacf.png").exists()  # no velocities written
    assert result["vacf"] is None

    positions, species, cell = _frames_from_h5py(trajectory)
    frames = torch.as_tensor(np.concatenate([p[::2] for p in positions]))  # --stride 2
    assert result["frames_analysed"] == 3 * 6 and result["distribution_frames"] == len(frames) == 9
    r_max = rdf_range(cell)
    assert r_max == 6.0  # the 64-molecule box is 12.4 Å wide
    r, rdfs = radial_distribution(frames, species, cell, r_max=r_max, sigma=0.0)
    assert set(result["rdf"]["g"]) == {"H-H", "O-H", "O-O"}
    np.testing.assert_allclose(result["rdf"]["r_A"], r.numpy(), rtol=0, atol=1e-12)
    for pair, label in (((1, 1), "H-H"), ((1, 8), "O-H"), ((8, 8), "O-O")):
        np.testing.assert_allclose(
            result["rdf"]["g"][label], rdfs[pair].mean(0).numpy(), rtol=1e-12, atol=1e-12
        )
    _, h = distance_histogram_h_r(frames, 10.0, sigma=0.0, cell=cell)
    np.testing.assert_allclose(result["h_r"]["h_per_A"], h.mean(0).numpy(), rtol=0, atol=1e-12)
    assert set(result["bond_angles"]["mean_deg"]) == {"H-O-H"}  # from --system water's bonds
    assert set(result["diffusivity_cm2_per_s"]) == {"H", "O"}
    assert all(d is not None for d in result["diffusivity_cm2_per_s"].values())
    assert result["msd"]["lag_fs"] == [0.0, 2.0, 4.0]  # window 4 fs, frames every 2 fs


# --- trajectories with known motion ------------------------------------------------------------

BOX_A = 12.0
N_OXYGEN, N_HYDROGEN = 20, 40


def _box() -> Atoms:
    rng = np.random.default_rng(0)
    numbers = [8] * N_OXYGEN + [1] * N_HYDROGEN
    return Atoms(numbers, rng.uniform(0, BOX_A, (len(numbers), 3)), cell=[BOX_A] * 3, pbc=True)


def _write(path, positions, velocities, interval_fs, ends, energies=None):
    """Write frames [F, R, N, 3] (velocities too, potential energies [F, R] or zeros) of
    replicas of :func:`_box`; replica r is active for its first ``ends[r]`` frames only (as the
    runner freezes unstable replicas)."""
    n_frames, n_replicas = positions.shape[:2]
    if energies is None:
        energies = torch.zeros(n_frames, n_replicas, dtype=torch.float64)
    state = state_from_atoms([_box()] * n_replicas)
    with TrajectoryWriter(path, velocities=True) as writer:
        for k in range(n_frames):
            writer(
                replace(
                    state,
                    positions=positions[k].reshape(-1, 3),
                    velocities=velocities[k].reshape(-1, 3),
                    potential_energy=energies[k],
                    active=torch.as_tensor([k < end for end in ends]),
                    step=k,
                    time_fs=k * interval_fs,
                )
            )


def test_constant_velocities_give_the_exact_pooled_msd_and_vacf(tmp_path):
    """Atoms moving at constant velocities v + u, u a common drift: about the centre of mass
    each replica's MSD is exactly ⟨|v|²⟩ t², and its ⟨v(t)·v(t + m)⟩ is ⟨|v + u|²⟩. Pooling
    weights replica r at lag m by its F_r − m origins, so with replicas of different speeds and
    lengths the pooled VACF is the origin-weighted ⟨|v + u|²⟩ at lag m over the one at lag 0."""
    rng = np.random.default_rng(2)
    masses = torch.as_tensor(_box().get_masses())
    speeds = [1.0, 2.0, 3.0]  # replica r moves (r + 1)× as fast
    base = torch.as_tensor(rng.normal(scale=0.01, size=(len(masses), 3)))  # Å/fs
    base -= (masses[:, None] * base).sum(0) / masses.sum()  # centre of mass at rest
    v = torch.stack([s * base for s in speeds])  # [R, N, 3]
    drift = torch.tensor([0.02, -0.01, 0.005], dtype=torch.float64)  # Å/fs, every atom
    interval, n_frames, ends = 5.0, 30, [30, 12, 1]
    t = interval * torch.arange(n_frames, dtype=torch.float64)
    start = torch.as_tensor(_box().positions)
    positions = start + t[:, None, None, None] * (v + drift)  # [F, R, N, 3]
    velocities = (v + drift).expand(n_frames, *v.shape)
    path = tmp_path / "drift.h5"
    _write(path, positions, velocities, interval, ends)

    result = analyze_trajectory(path, window_ps=0.1)  # lags up to 20 frames
    lags = np.arange(21)
    np.testing.assert_allclose(result.msd_lag_fs, interval * lags)
    np.testing.assert_allclose(result.vacf_lag_fs, interval * lags)
    origins = np.array([[max(end - m, 0) for m in lags] for end in ends], dtype=float)
    numbers = _box().numbers

    def pooled(values):  # per-replica values [R] weighted by origins, per lag
        return (origins * values[:, None]).sum(0) / origins.sum(0)

    for symbol, mask in (("O", numbers == 8), ("H", numbers == 1), ("all", numbers > 0)):
        moving = pooled(np.array([((v[r] + drift)[mask] ** 2).sum(-1).mean() for r in range(3)]))
        np.testing.assert_allclose(result.vacf[symbol], moving / moving[0], rtol=1e-12)
        if symbol != "all":
            speed2 = pooled(np.array([(v[r][mask] ** 2).sum(-1).mean() for r in range(3)]))
            expected = speed2 * (interval * lags) ** 2
            np.testing.assert_allclose(result.msd_A2[symbol], expected, rtol=1e-9, atol=1e-12)
            # D: slope / 6 of the MSD over lags 10 … 20 frames (the second half), Å²/fs → cm²/s
            slope = np.polyfit(interval * lags[10:], expected[10:], 1)[0]
            d = result.diffusivity_cm2_per_s[symbol]
            assert d == pytest.approx(0.1 * slope / 6, rel=1e-9)
    assert result.frames_analysed == sum(ends)
    assert [row["ended_early"] for row in result.replicas] == [False, True, True]
    assert [len(s.time_fs) for s in result.series] == ends


#: Per-axis variance (Å²) of one random-walk step of each element: D = σ²/(2Δt) per element.
STEP_VARIANCE = {8: 0.01, 1: 0.04}


def test_random_walks_give_their_diffusivity_per_element(tmp_path):
    """Random walks with a known D per element; the MSD is taken about the centre of mass, which
    moves too, so the expected MSD per step is σ_e² − 2 m_e σ_e²/M + Σ_j m_j² σ_j²/M² per axis.
    A replica frozen early whose last positions are non-finite, and one whose last energy is,
    count up to the frame before."""
    interval, n_frames, n_replicas = 20.0, 400, 8
    atoms = _box()
    numbers, masses = atoms.numbers, atoms.get_masses()
    sigma2 = np.array([STEP_VARIANCE[int(z)] for z in numbers])
    rng = np.random.default_rng(0)
    steps = rng.normal(size=(n_frames, n_replicas, len(numbers), 3)) * np.sqrt(sigma2)[:, None]
    steps[0] = 0.0
    positions = torch.as_tensor(atoms.positions + np.cumsum(steps, axis=0))
    ends = [n_frames] * (n_replicas - 1) + [150]
    positions[149, -1, 3] = float("nan")  # the frozen replica's last frame blew up
    energies = torch.zeros(n_frames, n_replicas, dtype=torch.float64)
    energies[-1, 0] = float("inf")  # replica 0's last energy, positions still finite
    path = tmp_path / "walk.h5"
    _write(path, positions, torch.zeros_like(positions), interval, ends, energies)

    result = analyze_trajectory(path, window_ps=0.2, with_vacf=False)  # lags up to 10 frames
    assert result.vacf is None
    assert result.frames_analysed == (n_replicas - 1) * n_frames - 1 + 149
    for k in (0, 7):
        assert any(f"replica {k}:" in note and "non-finite" in note for note in result.notes)
    json.dumps(result.to_json(), allow_nan=False)  # what analysis.json gets
    plots = write_plots(result, tmp_path / "plots")
    assert [p.name for p in plots] == ["h_r.png", "rdf.png", "msd.png", "energies.png"]
    total = masses.sum()
    centre_variance = (masses**2 * sigma2).sum() / total**2
    for symbol, z in (("O", 8), ("H", 1)):
        m_e, s2 = masses[numbers == z][0], STEP_VARIANCE[z]
        per_axis = s2 - 2 * m_e * s2 / total + centre_variance
        expected = float(to_cm2_per_s(per_axis / (2 * interval)))
        # 20 O / 40 H walkers × 8 replicas × ~390 origins: a few per cent of noise
        assert result.diffusivity_cm2_per_s[symbol] == pytest.approx(expected, rel=0.05), symbol
    short = analyze_trajectory(path, window_ps=10.0, with_vacf=False)  # longer than any replica
    assert short.diffusivity_cm2_per_s == {"H": None, "O": None}
    assert any("no replica spans" in note for note in short.notes)


def test_alanine_dipeptide_trajectory_gets_its_phi_psi_coverage_and_ramachandran_plot(
    tmp_path, capsys
):
    """φ, ψ of every usable frame of every replica, as ASE measures them frame by frame; the
    coverage of those angles; the plot and the printed line with --system only."""
    from stablemd.analysis.ramachandran import quadtree_coverage
    from stablemd.systems import get_system

    system = get_system("alanine-dipeptide")
    rng = np.random.default_rng(7)
    n_frames, ends = 6, [6, 4]  # replica 1 is frozen after 4 frames
    positions = system.atoms.positions + rng.normal(scale=0.25, size=(n_frames, 2, 22, 3))
    state = state_from_atoms([system.atoms] * 2)
    path = tmp_path / "ala.h5"
    with TrajectoryWriter(path) as writer:
        for k in range(n_frames):
            writer(
                replace(
                    state,
                    positions=torch.as_tensor(positions[k]).reshape(-1, 3),
                    potential_energy=torch.zeros(2, dtype=torch.float64),
                    active=torch.as_tensor([k < end for end in ends]),
                    step=k,
                    time_fs=k * 5.0,
                )
            )
    frames = [Atoms(system.atoms.numbers, positions[k, r]) for r in (0, 1) for k in range(ends[r])]
    expected_phi = np.array([a.get_dihedral(4, 6, 8, 14) for a in frames])
    expected_psi = np.array([a.get_dihedral(6, 8, 14, 16) for a in frames])

    result = analyze_trajectory(path, system, with_vacf=False)
    np.testing.assert_allclose(np.mod(result.phi_deg, 360), expected_phi, atol=1e-9)
    np.testing.assert_allclose(np.mod(result.psi_deg, 360), expected_psi, atol=1e-9)
    assert result.ramachandran_coverage == quadtree_coverage(expected_phi, expected_psi) > 0

    out = tmp_path / "with"
    assert _stablemd(["analyze", str(path), "--out", str(out), "--system", system.name]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f"Ramachandran coverage {result.ramachandran_coverage:.4f}" in printed
    assert (out / "ramachandran.png").read_bytes()[:8] == PNG
    saved = json.loads((out / "analysis.json").read_text())["ramachandran"]
    assert saved == {"coverage": result.ramachandran_coverage, "n": 10, "depth": 5}
    # without a system that names φ and ψ, no backbone analysis
    bare = analyze_trajectory(path, with_vacf=False)
    assert bare.phi_deg is None and bare.to_json()["ramachandran"] is None


# --- refused input ------------------------------------------------------------------------------


def test_bad_input_is_one_line_and_exit_code_2(model_file, tmp_path, capsys):
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    trajectory = _simulate(model_file, tmp_path / "md", "ethanol", "--time-ps", "0.002")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    cases = [
        ([str(text), "--out", str(tmp_path / "a")], "not an HDF5 file"),
        ([str(plain), "--out", str(tmp_path / "b")], "not an H5MD trajectory"),
        ([str(tmp_path / "missing.h5"), "--out", str(tmp_path / "c")], "no such trajectory"),
        ([trajectory, "--out", str(tmp_path / "d"), "--vacf"], "no velocities"),
        ([trajectory, "--out", str(occupied)], "add --overwrite"),
        ([trajectory, "--out", str(tmp_path / "e"), "--system", "aspirin"], "not the aspirin"),
        ([trajectory, "--out", str(tmp_path / "f"), "--param", "n_molecules=8"], "needs --system"),
    ]
    for args, message in cases:
        assert _stablemd(["analyze", *args]) == 2, message
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not any((tmp_path / name).exists() for name in "abcdef")

    (occupied / "rdf.png").write_bytes(b"stale")  # from an earlier analysis of a water box
    assert _stablemd(["analyze", trajectory, "--out", str(occupied), "--overwrite"]) == 0
    assert (occupied / "keep.txt").read_text() == "mine"  # only the command's own files go
    assert not (occupied / "rdf.png").exists()
    assert (occupied / "analysis.json").is_file()
