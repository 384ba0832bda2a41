"""Energy-and-force training: statistics, learning, checkpoint and resume."""

from __future__ import annotations

import shutil

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from stablemd.core.errors import InputError
from stablemd.data.database import read_frames, write_frames
from stablemd.data.fingerprints import frame_fingerprint, frame_fingerprint_candidates
from stablemd.data.formats import export_extxyz, import_file
from stablemd.data.frames import FrameSet
from stablemd.fix.stable_training.workflow import training_frames
from stablemd.models.potential import predict
from stablemd.training.config import TrainConfig
from stablemd.training.metrics import error_metrics
from stablemd.training.statistics import (
    fit_energy_scaling,
    fit_reference_energies,
    recentre_energies,
)
from stablemd.training.trainer import Trainer, new_potential
from stablemd.training.workflow import locate_training_frames, train_from_database

SMALL_MODEL = {"n_features": 16, "n_interactions": 2, "cutoff": 4.0}


def test_reference_energies_recover_a_linear_composition_model():
    rng = np.random.default_rng(1)
    e0 = {1: -13.6, 6: -1029.5, 8: -2041.3}
    frames = []
    for _ in range(12):
        numbers = rng.choice([1, 6, 8], size=rng.integers(3, 9))
        atoms = Atoms(numbers=numbers, positions=rng.normal(size=(len(numbers), 3)) * 3)
        energy = sum(e0[int(z)] for z in numbers)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    fitted = fit_reference_energies(FrameSet(frames, torch.float64))
    for z, value in e0.items():
        assert fitted[z] == pytest.approx(value, abs=1e-8)


def test_recentring_zeroes_the_mean_energy_error_and_moves_no_force(ethanol_frames):
    frames = FrameSet(ethanol_frames[:20], torch.float64)
    model = new_potential(_config(), frames.elements()).double()
    fit_energy_scaling(model, frames)
    model.energy_scaling.shift += 0.3  # an offset of 0.3 eV per atom
    batch = frames.batch(range(len(frames)))
    before = predict(model, batch)
    error_before = (batch.energy - before["energy"].detach()) / batch.atoms_per_system
    buffers = {k: v.clone() for k, v in model.state_dict().items() if k != "energy_scaling.shift"}

    change = recentre_energies(model, frames, batch_size=7)

    after = predict(model, batch)
    per_atom_error = (batch.energy - after["energy"].detach()) / batch.atoms_per_system
    assert abs(float(per_atom_error.mean())) < 1e-10
    assert change == pytest.approx(float(error_before.mean()), abs=1e-10)
    assert torch.equal(before["forces"], after["forces"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())


def _config(**overrides) -> TrainConfig:
    values = dict(model_options=SMALL_MODEL, batch_size=8, max_epochs=4, learning_rate=3e-3)
    values.update(overrides)
    return TrainConfig(**values)


def test_training_reduces_force_error(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:48]), FrameSet(ethanol_frames[48:])
    config = _config(max_epochs=25)
    untrained = new_potential(config, train.elements())
    before = error_metrics(untrained, val)["forces_eV_per_A"]["mae"]
    result = Trainer(config, train, val, tmp_path, progress=False).run()
    after = error_metrics(result.potential, val)["forces_eV_per_A"]["mae"]
    assert after < 0.5 * before
    assert (tmp_path / "metrics.csv").read_text().count("\n") == len(result.history) + 1


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:40]), FrameSet(ethanol_frames[40:])
    config = _config(max_epochs=3, checkpoint_every_seconds=1e-9)
    reference = Trainer(config, train, val, tmp_path / "whole", progress=False).run()

    def stop_mid_epoch(epoch, batches_done):
        if epoch == 1 and batches_done == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        Trainer(
            config, train, val, tmp_path / "cut", progress=False, after_batch=stop_mid_epoch
        ).run()
    resumed = Trainer(config, train, val, tmp_path / "cut", progress=False).run()

    assert len(resumed.history) == len(reference.history) == 3
    for key, value in reference.potential.state_dict().items():
        torch.testing.assert_close(resumed.potential.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_resuming_with_another_configuration_is_refused(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:20]), FrameSet(ethanol_frames[20:30])
    Trainer(_config(max_epochs=1), train, val, tmp_path, progress=False).run()
    with pytest.raises(InputError, match=r"this run used learning_rate=0\.003, not 0\.01"):
        Trainer(
            _config(max_epochs=1, learning_rate=1e-2), train, val, tmp_path, progress=False
        ).run()


def test_time_budget_still_returns_a_model(ethanol_frames, tmp_path):
    train, val = FrameSet(ethanol_frames[:40]), FrameSet(ethanol_frames[40:])
    result = Trainer(_config(max_time_minutes=1e-6), train, val, tmp_path, progress=False).run()
    assert np.isfinite(result.best_validation["metrics"]["forces_eV_per_A"]["mae"])


def test_rerun_into_the_same_output_with_other_inputs_is_refused(ethanol_frames, tmp_path):
    """A finished run is reused only for the same data (by content), split, model and options;
    anything else is refused instead of answering with the old model and metrics."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    frames = [atoms.copy() for atoms in ethanol_frames[:24]]
    for k, (atoms, original) in enumerate(zip(frames, ethanol_frames, strict=False)):
        atoms.calc, atoms.info["trajectory"] = original.calc, k % 4
    write_frames(a, frames)
    write_frames(b, ethanol_frames[24:48])
    relabelled = [atoms.copy() for atoms in ethanol_frames[:24]]  # same positions, other forces
    for atoms, original in zip(relabelled, ethanol_frames[:24], strict=True):
        results = original.calc.results
        atoms.calc = SinglePointCalculator(
            atoms, energy=results["energy"], forces=1.1 * results["forces"]
        )
    write_frames(tmp_path / "relabelled.db", relabelled)
    copy = tmp_path / "elsewhere" / "a.db"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    config = _config(max_epochs=1)
    out = tmp_path / "model.pt"
    first = train_from_database(a, 10, 6, config, out, progress=False)
    again = train_from_database(copy, 10, 6, config, out, progress=False)  # same content
    assert again.metadata["validation"] == first.metadata["validation"]
    saved = out.read_bytes()
    for data, n_train, n_val, options, named in [
        (b, 10, 6, {}, "data"),
        (tmp_path / "relabelled.db", 10, 6, {}, "data"),
        (a, 12, 6, {}, "n_train"),
        (a, 10, 5, {}, "n_val"),
        (a, 10, 6, {"model_options": {**SMALL_MODEL, "n_features": 8}}, "model_options"),
        (a, 10, 6, {"seed": 1}, "seed"),
    ]:
        with pytest.raises(InputError, match=f"this run used {named}"):
            train_from_database(data, n_train, n_val, _config(max_epochs=1, **options), out,
                                progress=False)  # fmt: skip
    with pytest.raises(InputError, match="this run used split_by='random', not 'trajectory'"):
        train_from_database(a, 10, 6, config, out, split_by="trajectory", progress=False)
    assert out.read_bytes() == saved  # the model file still describes the first run
    # a checkpoint written before runs recorded their inputs cannot prove them: refused
    checkpoint = tmp_path / "model_run" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["inputs"]
    torch.save(state, checkpoint)
    with pytest.raises(InputError, match="does not record its data_fingerprint"):
        train_from_database(a, 10, 6, config, out, progress=False)


def test_training_frames_are_recognised_by_content_in_a_shuffled_extxyz_copy(
    ethanol_frames, tmp_path
):
    data = tmp_path / "data.db"
    write_frames(data, ethanol_frames[:30])
    model = train_from_database(data, 12, 6, _config(max_epochs=1), tmp_path / "m.pt",
                                progress=False)  # fmt: skip
    training = model.metadata["training"]
    used = set(training["train_indices"]) | set(training["val_indices"])
    # and what the ASE calculator compares structures with
    assert set(training["shortest_distances_A"]) == {"H-H", "H-C", "H-O", "C-C", "C-O"}
    assert 0.8 < training["shortest_distances_A"]["H-C"] < 1.1
    # export to extended XYZ, shuffle, import again: another file, other order, text round trip
    export_extxyz(data, tmp_path / "data.extxyz")
    exported = ase.io.read(tmp_path / "data.extxyz", index=":")
    order = np.random.default_rng(3).permutation(len(exported))
    ase.io.write(tmp_path / "shuffled.extxyz", [exported[i] for i in order])
    import_file(tmp_path / "shuffled.extxyz", tmp_path / "copy.db")
    frames = read_frames(tmp_path / "copy.db")

    located = locate_training_frames(model.metadata, tmp_path / "copy.db", frames)
    assert located.by == "content" and located.recognised == 18
    assert sorted(order[located.held_out].tolist()) == sorted(set(range(30)) - used)
    assert order[located.train].tolist() == training["train_indices"]  # the model's order
    assert order[located.val].tolist() == training["val_indices"]
    assert "18 frames of copy.db recognised by content" in located.describe(tmp_path / "copy.db")
    qm_frames, _ = training_frames(model.metadata, tmp_path / "copy.db")
    for atoms, i in zip(qm_frames, training["train_indices"], strict=True):
        np.testing.assert_allclose(atoms.positions, ethanol_frames[i].positions, atol=1e-7)
    other = locate_training_frames(model.metadata, tmp_path / "o.db", ethanol_frames[30:])
    assert other.by == "none" and other.held_out == list(range(30)) and not other.train

    # a model saved before per-frame fingerprints: its recorded path and indices, as before
    old = {"training": {k: v for k, v in training.items() if "frame_fingerprints" not in k}}
    assert locate_training_frames(old, tmp_path / "copy.db", frames).held_out == list(range(30))
    same = locate_training_frames(old, data, read_frames(data))
    assert same.by == "path" and set(same.held_out) == set(range(30)) - used


def test_a_copy_a_rounding_boundary_apart_is_the_same_frame():
    """Rounding puts copies that differ in the 9th decimal on both sides of a boundary now and
    then; the candidates of the copy include the original's fingerprint."""
    original = molecule("H2O")
    original.positions[0, 0] = 0.12345 + 3e-9  # rounds up to 0.1235 (FRAME_DECIMALS = 4)
    copy = original.copy()
    copy.positions[0, 0] = 0.12345 - 2e-9  # as extended XYZ could write it: rounds down
    assert frame_fingerprint(copy) != frame_fingerprint(original)
    assert frame_fingerprint(original) in frame_fingerprint_candidates(copy)
    assert frame_fingerprint_candidates(original)[0] == frame_fingerprint(original)
    moved = original.copy()
    moved.positions[0, 0] += 1e-3
    assert frame_fingerprint(original) not in frame_fingerprint_candidates(moved)
