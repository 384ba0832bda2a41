"""The stability benchmark: frozen replicas are reported, the rest finish; CLI outputs."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch

from stablemd.cli.main import main
from stablemd.core.errors import InputError
from stablemd.diagnose.stability.benchmark import StabilitySettings, run_stability
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
