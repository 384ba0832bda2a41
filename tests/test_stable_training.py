"""The StABlE loop: it learns from observables only, never labels, and resumes exactly."""

from __future__ import annotations

import math
from itertools import groupby

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from md_support import single_thread  # noqa: F401

from stablemd.cli.main import main
from stablemd.core.errors import InputError
from stablemd.data.database import read_frames, write_frames
from stablemd.data.frames import FrameSet
from stablemd.fix.stable_training.config import StableConfig
from stablemd.fix.stable_training.loop import StableTrainer
from stablemd.fix.stable_training.targets import (
    make_observable,
    reference_from_file,
    reference_from_frames,
)
from stablemd.fix.stable_training.workflow import reference_value, system_of
from stablemd.models.potential import predict
from stablemd.models.registry import build_potential, load_potential, save_potential
from stablemd.oracles import registry as oracle_registry
from stablemd.oracles.spcfw import SPCFwCalculator
from stablemd.oracles.xtb import XTBCalculator
from stablemd.systems import get_system
from stablemd.training.statistics import fit_energy_scaling

pytestmark = pytest.mark.usefixtures("single_thread")

QUICK = dict(
    replicas=4, steps_per_epoch=20, sample_every=5, check_every=5, optimizer="adam",
    learning_rate=3e-3, qm_batch_size=8, max_cycles=3,
)  # fmt: skip


@pytest.fixture
def no_oracle(monkeypatch):
    """Any attempt to make a new reference label fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("StABlE called a reference method")

    monkeypatch.setattr(oracle_registry, "get_oracle", forbidden)
    monkeypatch.setattr(XTBCalculator, "calculate", forbidden)
    monkeypatch.setattr(SPCFwCalculator, "calculate", forbidden)


def _base_model(frames):
    """An untrained small PaiNN with its energy scale fitted: its MD fails within steps."""
    torch.manual_seed(0)
    model = build_potential("painn", elements=[1, 6, 8], n_features=8, n_interactions=2)
    fit_energy_scaling(model, FrameSet(frames))
    return model


def _trainer(frames, run_dir, model=None, **options):
    system = system_of(None, frames)
    config = StableConfig(**{**QUICK, **options})
    reference = reference_from_frames(make_observable("h_r", system), frames)
    model = _base_model(frames) if model is None else model
    return StableTrainer(model, system, frames, reference, config, run_dir, progress=False)


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_loop_learns_from_observables_without_new_labels(ethanol_frames, tmp_path, no_oracle):
    trainer = _trainer(ethanol_frames[:20], tmp_path / "run", max_epochs=5)
    before = _flat(trainer.potential).clone()
    result = trainer.run()
    phases = [row["phase"] for row in result.history]
    # the untrained model fails at once, so the run goes straight into learning
    assert phases[0] == "simulation" and result.history[0]["unstable_fraction"] >= 0.75
    steps = [row for row in result.history if not math.isnan(row["obs_loss"])]
    assert steps and all(row["n_samples"] >= 8 and row["qm_loss"] > 0 for row in steps)
    assert not torch.equal(before, _flat(result.potential))
    # the mean energy, which L_obs cannot see, is re-centred on the training frames
    frames = FrameSet(ethanol_frames[:20])
    batch = frames.batch(range(len(frames)))
    energy = predict(result.potential, batch, ["energy"])["energy"].detach()
    assert abs(float(((batch.energy - energy) / batch.atoms_per_system).mean())) < 1e-3
    assert abs(result.energy_recentred_eV_per_atom) > 1e-3
    assert len(trainer.qm_frames) == 20  # L_QM sees the fixed training frames only
    for name in ("log.csv", "stable_training.png", "checkpoint.pt"):
        assert (tmp_path / "run" / name).is_file()


def test_interrupted_run_resumes_to_the_same_weights(ethanol_frames, tmp_path):
    frames = ethanol_frames[:20]
    whole = _trainer(frames, tmp_path / "whole", max_epochs=6).run()
    _trainer(frames, tmp_path / "parts", max_epochs=3).run()
    resumed = _trainer(frames, tmp_path / "parts", max_epochs=6).run()
    assert [r["phase"] for r in resumed.history] == [r["phase"] for r in whole.history]
    assert torch.equal(_flat(resumed.potential), _flat(whole.potential))
    with pytest.raises(InputError, match="replicas"):
        _trainer(frames, tmp_path / "parts", max_epochs=7, replicas=6).run()


def test_a_rerun_with_another_base_model_or_other_frames_is_refused(ethanol_frames, tmp_path):
    _trainer(ethanol_frames[:20], tmp_path, max_epochs=1).run()
    base = _base_model(ethanol_frames[:20])
    with pytest.raises(InputError, match="this run used training_frames="):
        _trainer(ethanol_frames[20:40], tmp_path, model=base, max_epochs=2).run()
    other = _base_model(ethanol_frames[:20])
    other.energy_scaling.shift += 0.1
    with pytest.raises(InputError, match="this run used base_model="):
        _trainer(ethanol_frames[:20], tmp_path, model=other, max_epochs=2).run()


class Interrupt(Exception):
    pass


def test_a_run_killed_inside_an_epoch_continues_inside_it(ethanol_frames, tmp_path):
    """An epoch's MD checkpoints on time (here: every step); a run interrupted in the MD of a
    learning epoch resumes there, samples included, and ends as an uninterrupted run."""
    frames = ethanol_frames[:20]
    options = dict(max_epochs=3, checkpoint_every_seconds=1e-9)
    whole = _trainer(frames, tmp_path / "whole", **options).run()
    assert [row["phase"] for row in whole.history] == ["simulation", "learning", "learning"]
    cut = _trainer(frames, tmp_path / "cut", **options)
    real_forces, calls = cut.forces, {"n": 0}

    def forces_until_the_middle_of_epoch_2(state):
        calls["n"] += cut.epoch == 2
        if calls["n"] == 12:
            raise Interrupt
        return real_forces(state)

    cut.forces = forces_until_the_middle_of_epoch_2
    with pytest.raises(Interrupt):
        cut.run()
    assert (tmp_path / "cut" / "epoch-2-md.pt").is_file()
    resumed = _trainer(frames, tmp_path / "cut", **options)
    real_resumed, resumed_calls = resumed.forces, {"n": 0}

    def counted(state):
        resumed_calls["n"] += 1
        return real_resumed(state)

    resumed.forces = counted
    result = resumed.run()
    assert resumed_calls["n"] < 12  # it continued inside epoch 2 instead of starting it again
    assert torch.equal(_flat(result.potential), _flat(whole.potential))
    assert _comparable(result.history) == _comparable(whole.history)
    assert not list((tmp_path / "cut").glob("epoch-*-md.pt"))


def _comparable(history: list[dict]) -> list[dict]:
    """Log rows without wall times, NaN as None (NaN equals nothing)."""
    return [
        {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()
         if k != "elapsed_s"}
        for row in history
    ]  # fmt: skip


def test_each_learning_phase_restarts_its_schedule_and_ends_on_it(ethanol_frames, tmp_path):
    """As in the authors' code: the rate is cut when the learning runs' unstable fraction stops
    falling, the phase ends at the cut after ``max_lr_cuts``, and the next starts afresh."""
    options = dict(lr_patience=0, max_lr_cuts=1, f_min=0.0, max_learning_epochs=50)
    result = _trainer(ethanol_frames[:20], tmp_path, max_epochs=14, **options).run()
    phases = [list(rows) for learning, rows in groupby(result.history, _is_learning) if learning]
    assert len(phases) >= 2
    for rows in phases:
        rates = [row["learning_rate"] for row in rows]
        assert rates[0] == QUICK["learning_rate"]
        assert rates == sorted(rates, reverse=True)
        assert all(not math.isnan(row["obs_loss"]) for row in rows[:-1])
    for *_, end in phases[:-1]:  # an ended phase: no step at its last epoch, two cuts made
        assert math.isnan(end["obs_loss"]) and end["unstable_fraction"] > 0
        assert end["learning_rate"] == pytest.approx(QUICK["learning_rate"] * 0.2**2)


def _is_learning(row: dict) -> bool:
    return row["phase"] == "learning"


def test_observable_must_suit_the_estimator(ethanol_frames, tmp_path):
    with pytest.raises(InputError, match="local"):
        _trainer(ethanol_frames[:4], tmp_path, observable="molecule_bond_length")


def test_config_rejects_inverted_thresholds():
    with pytest.raises(ValueError, match="f_min"):
        StableConfig(f_min=0.8, f_max=0.5)


def test_reference_reweighting_and_files(ethanol_frames, tmp_path):
    system = system_of(None, ethanol_frames)
    observable = make_observable("bond_lengths", system)
    plain = reference_from_frames(observable, ethanol_frames)
    same = reference_from_frames(observable, ethanol_frames, 500.0, 500.0)
    assert torch.allclose(plain.value, same.value) and same.effective_samples == pytest.approx(60)
    colder = reference_from_frames(observable, ethanol_frames, 500.0, 300.0)
    assert colder.effective_samples < 60
    # lower temperature favours low-energy frames: reweighted values differ from the mean
    assert not torch.allclose(colder.value, plain.value)

    np.savez(tmp_path / "ref.npz", reference=plain.value.numpy())
    assert torch.equal(
        reference_from_file(tmp_path / "ref.npz", len(plain.value)).value, plain.value
    )
    with pytest.raises(InputError, match="shape"):
        reference_from_file(tmp_path / "ref.npz", 3)
    np.savez(tmp_path / "other.npz", values=plain.value.numpy())
    with pytest.raises(InputError, match="'reference'"):
        reference_from_file(tmp_path / "other.npz", len(plain.value))


def test_reference_from_a_simulation_file(ethanol_frames, tmp_path):
    """Unlabelled frames of a reference simulation give g_ref; a wrong molecule is refused."""
    system = system_of(None, ethanol_frames)
    config = StableConfig()
    observable = make_observable("h_r", system)
    simulation = [Atoms(a.numbers, a.positions) for a in ethanol_frames[20:]]  # no labels
    expected = reference_from_frames(observable, simulation).value
    write_frames(tmp_path / "sim.db", simulation)
    ase.io.write(tmp_path / "sim.extxyz", simulation)
    for name in ("sim.db", "sim.extxyz"):
        got = reference_value(observable, system, ethanol_frames[:20], config, tmp_path / name)
        assert torch.allclose(got.value, expected) and got.effective_samples == 40
    own = reference_value(observable, system, ethanol_frames[:20], config)
    assert not torch.allclose(own.value, expected)
    with pytest.raises(InputError, match="has no energy"):
        read_frames(tmp_path / "sim.db")

    water = molecule("H2O")
    ase.io.write(tmp_path / "mixed.extxyz", [simulation[0], water])
    with pytest.raises(InputError, match=r"mixed.extxyz: frame 1 has 3 atoms \(H2O\)"):
        reference_value(observable, system, ethanol_frames[:20], config, tmp_path / "mixed.extxyz")


def test_stable_train_command(ethanol_frames, tmp_path, capsys, no_oracle):
    write_frames(tmp_path / "train.db", ethanol_frames[:20])
    model = _base_model(ethanol_frames[:20])
    save_potential(model, tmp_path / "base.pt", {"note": "base"})
    args = ["stable-train", "--model", str(tmp_path / "base.pt"), "--data",
            str(tmp_path / "train.db"), "--out", str(tmp_path / "stable.pt"),
            "--replicas", "4", "--steps-per-epoch", "20", "--max-epochs", "3",
            "--no-progress"]  # fmt: skip
    (tmp_path / "quick.yaml").write_text("sample_every: 5\ncheck_every: 5\nqm_batch_size: 8\n")
    with pytest.raises(SystemExit) as finished:
        main([*args, "--config", str(tmp_path / "quick.yaml")])
    assert finished.value.code == 0
    stable = load_potential(tmp_path / "stable.pt")
    assert stable.metadata["note"] == "base"
    assert stable.metadata["stable"]["epochs"] == 3
    out = " ".join(capsys.readouterr().out.split())
    assert "StABlE: 3 epochs" in out
    assert "no frame of train.db was used to train or validate the model; L_QM uses all" in out

    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--config", str(tmp_path / "quick.yaml"), "--temperature", "300"])
    assert exit_info.value.code == 2
    assert "temperature_K" in capsys.readouterr().err


def test_training_frames_must_be_the_named_system(ethanol_frames):
    """Frames of another molecule, or in another atom order, are refused with a clear message."""
    ethanol = get_system("ethanol").atoms  # C H H H C H H O H
    assert system_of("ethanol", [ethanol, ethanol.copy()]).name == "ethanol"
    with pytest.raises(InputError, match="the training frames: frame 0 has 9 atoms"):
        system_of("aspirin", [ethanol])
    with pytest.raises(InputError, match="the training frames: frame 1, atom 0 is H where"):
        system_of("ethanol", [ethanol, ethanol[::-1]])
    with pytest.raises(InputError, match="frame 0, atom 1 is C where the ethanol system has H"):
        system_of("ethanol", ethanol_frames)  # ASE's CH3CH2OH lists its atoms in another order
