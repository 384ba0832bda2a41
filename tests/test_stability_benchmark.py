"""The stability benchmark: frozen replicas are reported, the rest finish; CLI outputs."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch

from stablemd.analysis.structure import reference_observables
from stablemd.cli.main import main
from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.diagnose.stability.benchmark import StabilitySettings, run_stability
from stablemd.diagnose.stability.compare import compare_models
from stablemd.models.painn import PaiNN
from stablemd.models.potential import Potential
from stablemd.models.registry import save_potential
from stablemd.systems import get_system


class HarmonicBonds(Potential):
    """Harmonic springs (k in eV/Å²) on the bonds of one molecule, replicated per system."""

    kind = "test-harmonic-bonds"

    def __init__(self, bonds, lengths, k=30.0):
        super().__init__(elements=[1, 6, 8], cutoff=1.0)
        self.bonds = torch.as_tensor(bonds)
        self.lengths = torch.as_tensor(lengths, dtype=torch.float64)
        self.k = k
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def hyperparameters(self):
        return {}

    def raw_outputs(self, batch, neighbors, direct_forces, features, once_differentiable=False):
        n = len(batch.positions) // batch.n_systems
        offsets = torch.arange(batch.n_systems)[:, None, None] * n
        i, j = (self.bonds[None] + offsets).reshape(-1, 2).T
        r = (batch.positions[i] - batch.positions[j]).norm(dim=1)
        energy = 0.5 * self.k * (r - self.lengths.repeat(batch.n_systems)) ** 2
        per_atom = batch.positions.new_zeros(len(batch.positions)).index_add(0, i, energy)
        return {"raw_energies": per_atom + 0 * self.dummy}


def test_a_broken_replica_is_frozen_and_reported_while_the_others_finish(tmp_path):
    ethanol = get_system("ethanol")
    broken = ethanol.atoms.copy()
    broken.positions[0] += [0.9, 0.0, 0.0]  # one C stretched far beyond 0.5 Å from its bonds
    potential = HarmonicBonds(ethanol.bonds, ethanol.reference_bond_lengths)
    settings = StabilitySettings(replicas=4, temperature_K=300, time_ps=0.1, check_every=10)
    starts = [broken, ethanol.atoms, ethanol.atoms, ethanol.atoms]
    # draw the four starts in a known order: without replacement, all of them appear once
    result = run_stability(potential, ethanol, starts, settings, tmp_path, progress=False)
    times = result.summary.stable_times_ps
    assert sum(t == 0.0 for t in times) == 1  # the broken replica, found at the first check
    assert sum(t is None for t in times) == 3  # the others ran to the end
    assert result.summary.fraction_stable == pytest.approx(0.75)
    assert result.diffusivity_cm2_per_s is None  # molecules do not diffuse
    recorded = json.loads((tmp_path / "settings.json").read_text())
    for key in ("max_rdf_deviation", "rdf_window_ps"):  # as recorded before these options
        del recorded[key]
    (tmp_path / "settings.json").write_text(json.dumps(recorded))
    again = run_stability(potential, ethanol, starts, settings, tmp_path, progress=False)
    assert again.summary == result.summary  # a finished run is reported, not rerun
    hotter = StabilitySettings(replicas=4, temperature_K=600, time_ps=0.1, check_every=10)
    with pytest.raises(InputError, match="temperature_K=300"):
        run_stability(potential, ethanol, starts, hotter, tmp_path, progress=False)
    # other starts are another benchmark: refused, not answered with these stable times
    with pytest.raises(InputError, match="this run used starts="):
        run_stability(potential, ethanol, [ethanol.atoms] * 4, settings, tmp_path, progress=False)


def test_a_finished_run_extends_to_a_longer_one_as_if_run_at_once(tmp_path):
    ethanol = get_system("ethanol")
    soft = HarmonicBonds(ethanol.bonds, ethanol.reference_bond_lengths, k=6.0)  # bonds break
    short, long = (
        StabilitySettings(replicas=6, temperature_K=3000, time_ps=t, check_every=10)
        for t in (0.05, 0.25)
    )
    starts = [ethanol.atoms]
    first = run_stability(soft, ethanol, starts, short, tmp_path / "parts", progress=False)
    extended = run_stability(soft, ethanol, starts, long, tmp_path / "parts", progress=False)
    whole = run_stability(soft, ethanol, starts, long, tmp_path / "whole", progress=False)
    assert extended.summary == whole.summary and extended.h_r == whole.h_r
    assert extended.summary.run_length_ps == 0.25
    times = extended.summary.stable_times_ps
    assert any(t is not None and t > 0.05 for t in times)  # failures inside the extension
    assert extended.wall_time_s > first.wall_time_s
    with pytest.raises(InputError, match="already 0.25 ps long"):
        run_stability(soft, ethanol, starts, short, tmp_path / "parts", progress=False)


def test_stability_command_compares_two_models(tmp_path, capsys):
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = PaiNN(elements=[1, 6, 8], n_features=8, n_interactions=1, cutoff=3.0)
        with torch.no_grad():  # tiny outputs: the reference geometry stays nearly at rest
            model.energy_scaling.scale.fill_(1e-3)
        save_potential(model, tmp_path / f"model{seed}.pt")
    # starts without labels, as from another program's trajectory; their h(r) is the reference
    rng = np.random.default_rng(0)
    starts = [get_system("ethanol").atoms.copy() for _ in range(3)]
    for atoms in starts:
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
    ase.io.write(tmp_path / "starts.extxyz", starts)
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["stability", "--model", str(tmp_path / "model0.pt"), "--model",
             str(tmp_path / "model1.pt"), "--system", "ethanol", "--replicas", "3",
             "--temperature", "300", "--time-ps", "0.02", "--out", str(out), "--no-progress",
             "--starts", str(tmp_path / "starts.extxyz")]
        )  # fmt: skip
    assert exit_info.value.code in (0, None)
    summary = json.loads((out / "summary.json").read_text())
    assert {"model0", "model1"} <= set(summary)
    for name in ("model0", "model1"):
        assert len(summary[name]["stable_times_ps"]) == 3
        assert summary[name]["steps_per_s"] > 0
    assert (out / "survival.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "median" in capsys.readouterr().out
    assert np.isfinite(summary["model0"]["mean_ps"])
    assert 0 < summary["model0"]["h_r_mae"] < 1


def test_stability_command_refuses_starts_in_another_atom_order(tmp_path, capsys):
    """Starts whose atoms are not the system's, in its order, are refused before any MD."""
    torch.manual_seed(0)
    save_potential(PaiNN(elements=[1, 6, 8], n_features=8, n_interactions=1), tmp_path / "m.pt")
    ethanol = get_system("ethanol").atoms  # C H H H C H H O H
    ase.io.write(tmp_path / "starts.extxyz", [ethanol, ethanol[::-1]])
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["stability", "--model", str(tmp_path / "m.pt"), "--system", "ethanol",
             "--replicas", "2", "--time-ps", "0.01", "--out", str(out), "--no-progress",
             "--starts", str(tmp_path / "starts.extxyz")]
        )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "starts.extxyz: frame 1, atom 0 is H" in err and "where the ethanol system has" in err
    assert not out.exists()


def test_periodic_runs_report_diffusivity_and_survive_a_blown_up_replica(tmp_path):
    """A water box gets D per element (none from a run shorter than the MSD window), and a
    replica with non-finite positions is frozen at the next check while the others go on."""
    water = get_system("water", n_molecules=8)
    potential = HarmonicBonds(water.bonds, water.reference_bond_lengths)
    blown_up = water.atoms.copy()
    blown_up.positions[4] = np.nan
    # harmonic bonds hold no H–O–H angle, so only contacts between molecules count here
    settings = StabilitySettings(
        replicas=2, temperature_K=300, time_ps=0.02, timestep_fs=1.0,
        nonbonded_intramolecular=False,
    )  # fmt: skip
    starts = [water.atoms, blown_up]
    result = run_stability(potential, water, starts, settings, tmp_path, progress=False)
    assert sorted(result.summary.stable_times_ps, key=str) == [0.0, None]
    assert result.diffusivity_cm2_per_s == {"H": None, "O": None}
    again = run_stability(potential, water, starts, settings, tmp_path, progress=False)
    assert again.diffusivity_cm2_per_s == result.diffusivity_cm2_per_s  # kept in result.json


# --- the RDF criterion (StABlE's evaluation criterion for water) -------------------------------


class Tethers(Potential):
    """Every atom on a spring (k in eV/Å²) to its anchor: an Einstein crystal, whose structure
    stays that of the anchors, with Gaussian displacements of variance k_BT/k per axis."""

    kind = "test-tethers"

    def __init__(self, anchors, k=10.0):
        super().__init__(elements=[1, 6, 8], cutoff=1.0)
        self.anchors = torch.as_tensor(anchors, dtype=torch.float64)
        self.k = k
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def hyperparameters(self):
        return {}

    def raw_outputs(self, batch, neighbors, direct_forces, features, once_differentiable=False):
        anchors = self.anchors.repeat(batch.n_systems, 1)
        energy = 0.5 * self.k * (batch.positions - anchors).pow(2).sum(-1)
        return {"raw_energies": energy + 0 * self.dummy}


def _thermal_water_frames(water, n_frames, temperature_K=300.0, k=10.0, seed=0):
    """Frames of :class:`Tethers` water at equilibrium: anchors plus N(0, k_BT/k) per axis."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt(KB_EV_PER_K * temperature_K / k)
    frames = []
    for _ in range(n_frames):
        atoms = water.atoms.copy()
        atoms.positions += rng.normal(scale=sigma, size=atoms.positions.shape)
        frames.append(atoms)
    return frames


def _rdf_settings(**changes):
    # contacts only between molecules and only below 0.5 Å: the RDF criterion judges here
    values = dict(
        replicas=4, temperature_K=300.0, time_ps=0.2, timestep_fs=1.0, check_every=10,
        nonbonded_intramolecular=False, min_intermolecular_A=0.5, max_rdf_deviation=3.0,
        rdf_window_ps=0.05,
    )  # fmt: skip
    return StabilitySettings(**(values | changes))


def test_rdf_deviation_flags_a_collapsing_water_box_and_not_a_healthy_one(tmp_path):
    """Against the RDFs of thermal frames, an Einstein crystal of water keeps its structure
    (deviation about 1 over 50 fs windows), while molecules whose O–H bonds pull to 60 % of
    their length are flagged by rdf_deviation (deviation about 9) at the first window's end."""
    water = get_system("water", n_molecules=8)
    frames = _thermal_water_frames(water, 16)
    models = {
        "healthy": Tethers(water.atoms.positions),
        "collapsing": HarmonicBonds(water.bonds, 0.6 * water.reference_bond_lengths),
    }
    rows = compare_models(models, water, frames, frames, _rdf_settings(), tmp_path, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["max_rdf_deviation"] == 3.0
    assert summary["healthy"]["failure_reasons"] == [None] * 4
    assert summary["healthy"]["stable_times_ps"] == [None] * 4
    assert summary["collapsing"]["failure_reasons"] == ["rdf_deviation"] * 4
    assert summary["collapsing"]["stable_times_ps"] == [0.05] * 4  # the first window's end
    assert rows["collapsing"]["summary"].median_ps == 0.05


def test_rdf_deviation_resumes_mid_window_as_if_never_stopped(tmp_path):
    """A run stopped in the middle of an RDF window and extended gives the stable times and
    reasons of one run at once; a tight threshold spreads the failures over several windows."""
    water = get_system("water", n_molecules=8)
    frames = _thermal_water_frames(water, 16)
    healthy = Tethers(water.atoms.positions)
    tight = dict(replicas=8, max_rdf_deviation=1.0, rdf_window_ps=0.03)
    short, long = _rdf_settings(time_ps=0.05, **tight), _rdf_settings(time_ps=0.2, **tight)

    def go(settings, out):
        return run_stability(
            healthy, water, frames, settings, tmp_path / out, progress=False,
            reference_rdf=reference_observables(frames).rdf,
        )  # fmt: skip

    go(short, "parts")  # stops at 50 fs, inside the window 30–60 fs
    extended, whole = go(long, "parts"), go(long, "whole")
    assert extended.summary == whole.summary
    assert extended.failure_reasons == whole.failure_reasons
    times = [t for t in whole.summary.stable_times_ps if t is not None]
    assert any(t > 0.05 for t in times) and len(set(times)) > 1  # after the split, spread out
    assert set(whole.failure_reasons) <= {"rdf_deviation", None}


def test_rdf_deviation_is_refused_for_molecules_and_without_reference(tmp_path, capsys):
    torch.manual_seed(0)
    save_potential(PaiNN(elements=[1, 6, 8], n_features=8, n_interactions=1), tmp_path / "m.pt")
    base = ["stability", "--model", str(tmp_path / "m.pt"), "--replicas", "2", "--time-ps",
            "0.01", "--no-progress", "--max-rdf-deviation", "3"]  # fmt: skip
    for args, message in (
        (["--system", "ethanol", "--out", str(tmp_path / "a")], "ethanol is a molecule"),
        (["--system", "water", "--out", str(tmp_path / "b")], "give --reference or --starts"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*base, *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    ethanol = get_system("ethanol")
    molecule = HarmonicBonds(ethanol.bonds, ethanol.reference_bond_lengths)
    with pytest.raises(InputError, match="ethanol is a molecule"):
        run_stability(molecule, ethanol, [ethanol.atoms], _rdf_settings(), tmp_path / "c")
    water = get_system("water", n_molecules=8)
    with pytest.raises(InputError, match="needs a reference RDF"):
        run_stability(Tethers(water.atoms.positions), water, [water.atoms], _rdf_settings(),
                      tmp_path / "d")  # fmt: skip


def test_stability_command_stops_replicas_by_the_rdf_criterion(tmp_path, capsys):
    """The options reach the run: a threshold nothing meets stops every replica at the first
    window's end, recorded in summary.json and printed."""
    torch.manual_seed(0)
    model = PaiNN(elements=[1, 6, 8], n_features=8, n_interactions=1, cutoff=3.0)
    with torch.no_grad():
        model.energy_scaling.scale.fill_(1e-3)
    save_potential(model, tmp_path / "m.pt")
    water = get_system("water")
    ase.io.write(tmp_path / "starts.extxyz", _thermal_water_frames(water, 2))
    out = tmp_path / "bench"
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["stability", "--model", str(tmp_path / "m.pt"), "--system", "water",
             "--replicas", "2", "--temperature", "300", "--time-ps", "0.01", "--out", str(out),
             "--no-progress", "--starts", str(tmp_path / "starts.extxyz"), "--check-every", "5",
             "--max-rdf-deviation", "0.001", "--rdf-window-ps", "0.005"]
        )  # fmt: skip
    assert exit_info.value.code in (0, None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["rdf_window_ps"] == 0.005
    assert summary["m"]["failure_reasons"] == ["rdf_deviation"] * 2
    assert summary["m"]["stable_times_ps"] == [0.005] * 2
    assert "2 × rdf_deviation" in capsys.readouterr().out
