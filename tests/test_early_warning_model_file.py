"""The early warning stored with the model: fitted at the end of ``train``, on a model's own
training frames by ``early-warning fit``, the critical level calibrated on reference MD
trajectories, and dropped or refused when the weights change."""

from __future__ import annotations

import hashlib

import pytest
import torch
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from md_support import rattled, single_thread  # noqa: F401

from stablemd.cli.main import main
from stablemd.core.errors import InputError
from stablemd.data.database import read_frames, write_frames
from stablemd.diagnose.early_warning import fit_latent_domain, model_file
from stablemd.diagnose.early_warning.model_file import (
    LEVEL_FLOOR_FRACTION,
    calibrate_on_trajectories,
    fit_and_attach,
    reference_trajectories,
    stored_early_warning,
)
from stablemd.models.painn import PaiNN
from stablemd.models.registry import load_potential, save_potential

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_CONFIG = "model_options: {n_features: 8, n_interactions: 1}\nbatch_size: 8\n"


def tiny_painn(seed: int = 0) -> PaiNN:
    torch.manual_seed(seed)
    return PaiNN([1, 6, 8], cutoff=4.0, n_features=8, n_interactions=1).double().eval()


def trajectories(n_runs=3, n_frames=8, timestep_fs=0.5, every=10):
    """Frames as ``data generate`` records them: trajectory, step and time step in ``info``;
    the last run grows wilder along its frames, so some of its atoms leave the domain."""
    frames = []
    for t in range(n_runs):
        for k in range(n_frames):
            scale = 0.05 if t < n_runs - 1 else 0.05 + 0.08 * k
            atoms = rattled(molecule("CH3CH2OH"), 1, scale=scale, seed=100 * t + k)[0]
            atoms.info = {"trajectory": t, "step": every * (k + 1), "timestep_fs": timestep_fs}
            frames.append(atoms)
    return frames


def test_the_critical_level_is_the_largest_cli_of_the_reference_trajectories(monkeypatch):
    potential = tiny_painn()
    frames = trajectories()
    domain = fit_latent_domain(potential, frames[:8])  # the first run's frames
    runs = reference_trajectories(frames)
    assert runs.indices == [list(range(8 * t, 8 * t + 8)) for t in range(3)]
    assert torch.allclose(runs.times_ps, torch.arange(8, dtype=torch.float64) * 0.005)
    levels = calibrate_on_trajectories(potential, domain, frames, runs)
    # by hand: each run's flagged fraction per frame, summed over every frame after its first
    # times the 5 fs between frames
    from stablemd.diagnose.early_warning import latent_features

    totals = {"grade": [], "box": []}
    for t in range(3):
        run = frames[8 * t : 8 * t + 8]
        features, numbers = latent_features(potential, run)
        for name in totals:
            flags = domain.indicator(features, numbers, name).double().reshape(8, 9)
            totals[name].append(float(flags.mean(dim=1)[1:].sum()) * 0.005)
    for name in ("grade", "box"):
        assert max(totals[name]) > 0  # the wild run leaves the domain
        least = LEVEL_FLOOR_FRACTION * 0.035  # the floor, a flagged fraction of T_cal
        assert levels[name].level_ps == pytest.approx(max(*totals[name], least), rel=1e-12)
        assert levels[name].calibration_ps == pytest.approx(0.035)
    # a floor above every run's index sets the level: all of T_cal flagged
    monkeypatch.setattr(model_file, "LEVEL_FLOOR_FRACTION", 1.0)
    floored = calibrate_on_trajectories(potential, domain, frames, runs)
    assert all(level.level_ps == pytest.approx(0.035) for level in floored.values())


def test_reference_trajectories_need_a_record_and_common_frames():
    frames = trajectories()
    assert reference_trajectories(frames[:1]) is None  # one frame: no time axis
    stripped = [a.copy() for a in frames]
    stripped[3].info = {}
    assert reference_trajectories(stripped) is None  # an imported frame without the record
    uneven = [a for a in frames if not (a.info["trajectory"] == 1 and a.info["step"] > 40)]
    assert len(reference_trajectories(uneven).times_ps) == 4  # cut to the steps all runs have


def test_the_attachment_follows_the_weights(tmp_path):
    potential = tiny_painn()
    frames = trajectories()
    attached = fit_and_attach(potential, frames[:8], frames)
    assert set(attached.critical_levels) == {"grade", "box"}
    save_potential(potential, tmp_path / "m.pt")
    loaded = load_potential(tmp_path / "m.pt")
    stored = stored_early_warning(loaded)
    features = torch.randn(20, 8, dtype=torch.float64)
    numbers = torch.tensor([1, 6, 8, 1] * 5)
    assert torch.equal(
        stored.domain.grade(features, numbers), attached.domain.grade(features, numbers)
    )
    assert stored.critical_levels == attached.critical_levels
    with torch.no_grad():  # trained further: the stored domain belongs to other weights
        next(loaded.parameters()).add_(0.01)
    with pytest.raises(InputError, match="fitted for other weights"):
        stored_early_warning(loaded)
    save_potential(loaded, tmp_path / "further.pt")
    assert stored_early_warning(load_potential(tmp_path / "further.pt")) is None


def _labelled(frames):
    out = []
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=0.0 * atoms.positions)
        atoms.info = dict(atoms.info)
        out.append(atoms)
    return out


def cli(*argv) -> int:
    """``stablemd argv`` in-process; its exit code."""
    try:
        main(list(argv))
    except SystemExit as exc:
        return exc.code
    return 0


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_stores_it_and_early_warning_fit_refits_a_bare_model(tmp_path, ethanol_frames):
    data = tmp_path / "data.db"
    frames = [a.copy() for a in ethanol_frames[:12]]
    for atoms, source, info in zip(frames, ethanol_frames, trajectories(2, 6), strict=False):
        atoms.calc = SinglePointCalculator(atoms, **source.calc.results)
        atoms.info = info.info
    write_frames(data, frames)
    (tmp_path / "tiny.yaml").write_text(TINY_CONFIG)
    assert 0 == cli("train", "--data", str(data), "--n-train", "6", "--n-val", "3", "--out",
          str(tmp_path / "m.pt"), "--config", str(tmp_path / "tiny.yaml"), "--max-epochs", "1",
          "--no-progress")  # fmt: skip
    trained = load_potential(tmp_path / "m.pt")
    stored = stored_early_warning(trained)
    assert {z: d.n_training for z, d in stored.domain.elements.items()} == {1: 36, 6: 12, 8: 6}
    assert stored.calibration == {"trajectories": 2, "frames_per_trajectory": 6, "length_ps": 0.025}

    # the same weights without the attachment (a model from before), then fitted by the command
    trained.attachments = {}
    save_potential(trained, tmp_path / "bare.pt", trained.metadata)
    before = _digest(tmp_path / "bare.pt")
    out = tmp_path / "fitted.pt"
    assert 0 == cli("early-warning", "fit", "--model", str(tmp_path / "bare.pt"), "--data",
                    str(data), "--out", str(out))  # fmt: skip
    assert _digest(tmp_path / "bare.pt") == before  # its input is never written
    refit = stored_early_warning(load_potential(out))
    assert refit.critical_levels == stored.critical_levels
    features, numbers = (
        torch.randn(30, 8, dtype=torch.float32).double(),
        torch.tensor([1, 6, 8] * 10),
    )
    assert torch.equal(
        refit.domain.grade(features, numbers), stored.domain.grade(features, numbers)
    )
    fit = ("early-warning", "fit", "--model", str(tmp_path / "bare.pt"), "--data")
    assert cli(*fit, str(data), "--out", str(out)) == 2  # an existing --out needs --overwrite
    assert cli(*fit, str(data), "--out", str(out), "--overwrite") == 0
    # data that hold none of the model's training frames: refused
    write_frames(tmp_path / "other.db", _labelled(rattled(molecule("CH3CH2OH"), 4, seed=9)))
    assert cli(*fit, str(tmp_path / "other.db"), "--out", str(tmp_path / "o.pt")) == 2
    assert not (tmp_path / "o.pt").exists()
    assert len(read_frames(data)) == 12
