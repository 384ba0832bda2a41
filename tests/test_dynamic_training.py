"""Dynamic training: rollouts through the engine's velocity Verlet, the window loss, its
gradients (detached and through time), the curriculum, resume and the command line.

Reference trajectories are NVE MD of the pd13-h2 cluster with ASE's EMT (Pd and H, fast),
written by ``data generate --friction 0``.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase.calculators.emt import EMT
from md_support import single_thread  # noqa: F401

from stablemd.cli.main import main
from stablemd.data.database import read_frames
from stablemd.data.frames import FrameSet
from stablemd.data.generate import generate_reference_data
from stablemd.data.trajectories import consecutive_runs, read_trajectories
from stablemd.fix.dynamic_training import trainer as trainer_module
from stablemd.fix.dynamic_training.config import DynamicTrainConfig
from stablemd.fix.dynamic_training.loss import dynamic_loss
from stablemd.fix.dynamic_training.rollout import DifferentiableForces, rollout
from stablemd.fix.dynamic_training.trainer import DynamicTrainer
from stablemd.fix.dynamic_training.validation import rollout_force_errors
from stablemd.fix.dynamic_training.windows import TrainingWindows
from stablemd.md.forces import CalculatorForces, ModelForces
from stablemd.md.integrators import VelocityVerlet
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import build_potential
from stablemd.systems import get_system
from stablemd.training import trainer as base_trainer
from stablemd.training.metrics import error_metrics

pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one thread is faster
N_STEPS = 12


def generate(path, every: int):
    generate_reference_data(
        get_system("pd13-h2"), EMT(), 600.0, N_STEPS * every, every, path,
        n_trajectories=2, progress=False, friction_per_fs=0.0,
    )  # fmt: skip
    return read_frames(path)


@pytest.fixture(scope="module")
def emt_data(tmp_path_factory):
    """Two NVE trajectories of 12 consecutive frames (every MD step)."""
    path = tmp_path_factory.mktemp("emt") / "pd.db"
    frames = generate(path, every=1)
    return path, frames, read_trajectories(frames, str(path))


KINDS = ["painn", "mace"]
#: Tiny models of each kind (a MACE of this size: 3704 weights, every one in the forces).
TINY = {
    "painn": dict(cutoff=4.0, n_features=8, n_interactions=1, n_rbf=6),
    "mace": dict(cutoff=4.0, hidden_irreps="8x0e+8x1o", radial_mlp=[16, 16], avg_num_neighbors=8.0),
}
#: Energy scale (eV) that gives each tiny model forces of ~0.2 eV/Å on pd13-h2 (a new MACE's
#: raw forces are ten times smaller than a new PaiNN's), so that its rollouts move the atoms.
TINY_SCALE = {"painn": 1.0, "mace": 10.0}


@functools.cache
def tiny_model(kind: str) -> Potential:
    """A small random model of ``kind`` in float64, one per kind: tests leave it unchanged
    (a copy of a MACE would compile its TorchScript code again, seconds)."""
    torch.manual_seed(0)
    model = build_potential(kind, elements=[1, 46], **TINY[kind]).to(torch.float64)
    model.energy_scaling.reference_energies[[1, 46]] = torch.tensor([1.0, 2.0]).double()
    model.energy_scaling.scale.fill_(TINY_SCALE[kind])
    return model


@pytest.mark.parametrize("every", [1, 3])
def test_rollout_with_the_reference_forces_reproduces_the_reference_trajectory(tmp_path, every):
    runs = read_trajectories(generate(tmp_path / "pd.db", every), "pd.db")
    assert runs[0].every == every and runs[0].timestep_fs == 0.5
    windows = TrainingWindows(runs, 8)
    batch = windows.batch([0, 3, len(windows) - 1])  # windows of both trajectories
    forces, energy = rollout(
        CalculatorForces(EMT()), batch.start, 8, batch.every, batch.timestep_fs, False
    )
    scale = batch.forces.abs().max()
    for k in range(8):  # velocity Verlet in the engine and in ASE: equal to rounding
        assert (forces[k] - batch.forces[k]).abs().max() < 1e-9 * scale, k
    assert torch.allclose(energy, batch.energy, rtol=0, atol=1e-9)
    assert (batch.forces[7] - batch.forces[0]).abs().max() > 0.05  # the atoms did move


def test_windows_never_cross_a_trajectory_boundary(emt_data):
    _, _, runs = emt_data
    windows = TrainingWindows(runs, 5)
    assert len(windows) == 2 * (N_STEPS - 5 + 1)
    batch = windows.batch(range(len(windows)))
    for w, (r, j) in enumerate(windows.starts):
        atoms = slice(17 * w, 17 * (w + 1))
        for k in range(5):
            assert np.array_equal(batch.forces[k][atoms].numpy(), runs[r].forces[j + k])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("through_time", [False, True])
def test_rollout_is_the_engines_velocity_verlet_step_for_step(emt_data, through_time, kind):
    _, _, runs = emt_data
    model = tiny_model(kind)
    batch = TrainingWindows(runs, 6).batch([0, 9])
    forces, _ = rollout(DifferentiableForces(model), batch.start, 6, 1, 0.5, through_time)
    integrator, term = VelocityVerlet(0.5), ModelForces(model)
    state = integrator.prepare(batch.start, term)
    for k in range(6):
        if k:
            state = integrator.step(state, term)
        assert (forces[k].detach() - state.forces).abs().max() < 1e-10, k
    assert (forces[5].detach() - forces[0].detach()).abs().max() > 1e-3


def _trainer(
    tmp_path, runs, frames, n_frames: int = N_STEPS, kind: str = "painn", **options
) -> DynamicTrainer:
    """Trains a tiny ``kind`` on the first ``n_frames`` of trajectory 0, validates on
    trajectory 1."""
    config = DynamicTrainConfig(
        dtype="float64", batch_size=4, validation_rollout_steps=6, checkpoint_every_seconds=1e6,
        model=kind, model_options=TINY[kind], **options,
    )  # fmt: skip
    (train_run,) = consecutive_runs(runs[0], set(runs[0].frame_indices[:n_frames]))
    train = FrameSet([frames[i] for i in train_run.frame_indices], torch.float64)
    validation = FrameSet([frames[i] for i in runs[1].frame_indices], torch.float64)
    return DynamicTrainer(
        config, [train_run], [runs[1]], train, validation, tmp_path, progress=False
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_window_of_one_frame_is_the_conventional_loss(tmp_path, emt_data, kind):
    _, frames, runs = emt_data
    trainer = _trainer(tmp_path, runs, frames, kind=kind, energy_weight=0.7)
    batch = trainer.train_frames.batch(range(len(trainer.train_frames)))
    assert batch.size == 1
    loss = float(trainer._loss(batch).detach())
    # the conventional per-frame errors of the same model on the same frames
    same = FrameSet([frames[i] for i in runs[0].frame_indices], torch.float64)
    metrics = error_metrics(trainer.potential, same, batch_size=64, forces="conservative")
    per_element = metrics["forces_per_element_eV_per_A"]
    expected = 50.0 * (per_element["H"]["mae"] + per_element["Pd"]["mae"])
    expected += 0.7 * metrics["energy_per_atom_eV"]["mae"]
    assert loss == pytest.approx(expected, rel=1e-12)


def _direction(model, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    direction = [
        torch.randn(p.shape, generator=generator, dtype=p.dtype) for p in model.parameters()
    ]
    norm = torch.sqrt(sum(d.pow(2).sum() for d in direction))
    return [d / norm for d in direction]


@contextlib.contextmanager
def _shifted(model, direction, h: float):
    """``model`` with its weights moved by ``h`` × ``direction``, restored exactly on exit."""
    saved = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, d in zip(model.parameters(), direction, strict=True):
            p.add_(h * d)
    try:
        yield model
    finally:
        with torch.no_grad():
            for p, value in zip(model.parameters(), saved, strict=True):
                p.copy_(value)


class Recording:
    """A force term that records the positions it is called at."""

    def __init__(self, term):
        self.term, self.positions = term, []

    def __call__(self, state):
        self.positions.append(state.positions.detach().clone())
        return self.term(state)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("through_time", [False, True])
def test_gradients_match_finite_differences(emt_data, through_time, kind):
    _, _, runs = emt_data
    model = tiny_model(kind)
    batch = TrainingWindows(runs, 3).batch([1, 14])
    numbers = batch.start.numbers

    def loss_of(positions=None):
        if positions is None:  # the whole rollout with the model's current weights
            forces, _ = rollout(DifferentiableForces(model), batch.start, 3, 1, 0.5, True)
        else:  # the model's forces at given frame positions (the detached gradient's target)
            forces = [
                predict(model, replace(batch.start, positions=x).batch(), ["forces"])["forces"]
                for x in positions
            ]
        return dynamic_loss(forces, batch.forces, numbers, 50.0)

    recording = Recording(DifferentiableForces(model))
    forces, _ = rollout(recording, batch.start, 3, 1, 0.5, through_time)
    loss = dynamic_loss(forces, batch.forces, numbers, 50.0)
    parameters = list(model.parameters())
    gradients = torch.autograd.grad(loss, parameters, allow_unused=True)  # the direct head
    gradients = [
        torch.zeros_like(p) if g is None else g for g, p in zip(gradients, parameters, strict=True)
    ]
    direction = _direction(model)
    analytic = float(sum((g * d).sum() for g, d in zip(gradients, direction, strict=True)))
    h = 1e-5

    def central_difference(positions):
        values = []
        for step in (h, -h):
            with _shifted(model, direction, step):
                values.append(float(loss_of(positions).detach()))
        return (values[0] - values[1]) / (2 * h)

    numeric = central_difference(None if through_time else recording.positions)
    # central differences of a loss of ~300 with h = 1e-5 resolve ~1e-9
    assert analytic == pytest.approx(numeric, rel=0, abs=1e-7)
    # the other mode's gradient differs by far more (the rollout's own dependence on the
    # weights: small over two steps of 0.5 fs, 1e-5 to 4e-5 here), so each check tells them
    # apart
    other = central_difference(recording.positions if through_time else None)
    assert abs(other - numeric) > 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_validation_rollouts_compare_each_step_with_its_reference(emt_data, kind):
    _, _, runs = emt_data
    model = tiny_model(kind)
    result = rollout_force_errors(model, runs, 5)
    assert result["steps"] == 5 and result["n_rollouts"] == 4  # 12 frames: starts 0 and 6
    assert len(result["mae_per_step"]) == 6 and set(result["per_element"]) == {"H", "Pd"}
    assert result["mae"] == pytest.approx(np.mean(result["mae_per_step"][1:]))
    # each step's error is that of the same rollout made by the training path
    windows = TrainingWindows(runs, 6).batch([0, 6, 7, 13])
    forces, _ = rollout(DifferentiableForces(model), windows.start, 6, 1, 0.5, False)
    for k in range(6):
        expected = float((forces[k].detach() - windows.forces[k]).abs().mean())
        assert result["mae_per_step"][k] == pytest.approx(expected, rel=1e-9), k
    assert result["exploded"] == 0


@pytest.mark.slow  # about 18 s on one idle core: two runs of seven epochs
def test_curriculum_grows_the_window_restarts_the_rate_and_resumes(tmp_path, emt_data, monkeypatch):
    _, frames, runs = emt_data
    real = trainer_module.rollout_force_errors

    def never_better(*args):  # a validation error that never improves: the rate falls
        return {**real(*args), "mae": 1.0}

    monkeypatch.setattr(trainer_module, "rollout_force_errors", never_better)
    monkeypatch.setattr(base_trainer, "plot_learning_curve", lambda *args: None)  # seconds each
    options = dict(
        window_max=3, learning_rate=1e-3, min_learning_rate=1e-5, restart_learning_rate=1e-4,
        lr_patience=0, lr_factor=0.1,
    )  # fmt: skip
    whole = _trainer(tmp_path / "whole", runs, frames, 5, max_epochs=50, **options)
    result = whole.run()
    # the rate of each epoch: 1e-3 twice (the first error counts as an improvement), 1e-4,
    # then the floor 1e-5: S = 2, restarted at 1e-4 for two epochs, the floor: S = 3, the same,
    # the floor at S = window_max: the end
    assert [row["window"] for row in result.history] == [1, 1, 1, 2, 2, 3, 3]
    rates = [row["learning_rate"] for row in result.history]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4], rel=1e-9)
    assert whole.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5) and whole.curriculum_done
    assert set(whole.windows_best) == {1, 2, 3}
    record = json.loads((tmp_path / "whole" / "rollout_errors.json").read_text())
    assert set(record["windows"]) == {"1", "2", "3"}
    assert len(record["windows"]["1"]["mae_per_step"]) == 7
    for size in (1, 2, 3):
        assert (tmp_path / "whole" / f"best_window_{size}.pt").is_file()
    assert (tmp_path / "whole" / "rollout_errors.png").is_file()
    # stopped after four epochs (in window 2), continued to the end: the same run
    _trainer(tmp_path / "parts", runs, frames, 5, max_epochs=4, **options).run()
    resumed = _trainer(tmp_path / "parts", runs, frames, 5, max_epochs=50, **options).run()
    for key in ("window", "learning_rate", "train_loss", "val_forces_mae_eV_per_A"):
        assert [r[key] for r in resumed.history] == [r[key] for r in result.history], key
    for name, value in result.potential.state_dict().items():
        assert torch.equal(value, resumed.potential.state_dict()[name]), name


def _metrics(run_dir) -> list[dict]:
    with (run_dir / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


# MACE: about 35 s on a busy machine, most of it building models (each compiles its TorchScript)
@pytest.mark.parametrize("kind", ["painn", pytest.param("mace", marks=pytest.mark.slow)])
def test_train_dynamic_on_the_command_line_runs_and_resumes(
    tmp_path, emt_data, capsys, monkeypatch, kind
):
    """A tiny model of each kind: S = 1 for one epoch, then (the rate starts at its floor)
    S = 2 through time for one, the end of the curriculum; a run stopped after the first epoch
    and rerun ends as the uninterrupted one."""
    path, _, _ = emt_data
    # one thread (single_thread) whatever the load: the runs are compared bit for bit
    monkeypatch.setattr("stablemd.cli.main.adapt_threads_to_load", lambda: None)
    monkeypatch.setattr(base_trainer, "plot_learning_curve", lambda *args: None)  # seconds each
    monkeypatch.setattr(trainer_module, "plot_rollout_errors", lambda *args: None)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"model: {kind}\nmodel_options: {json.dumps(TINY[kind])}\n"
        "validation_rollout_steps: 5\nbatch_size: 4\n"
        "learning_rate: 1.0e-3\nmin_learning_rate: 1.0e-3\nrestart_learning_rate: 1.0e-3\n"
    )

    def train(out, epochs: int) -> str:
        with pytest.raises(SystemExit) as done:
            main(["train", "--data", str(path), "--n-train", "12", "--n-val", "12",
                  "--out", str(out), "--config", str(config), "--dynamic", "--window-max", "2",
                  "--backprop", "through-time", "--max-epochs", str(epochs),
                  "--no-progress"])  # fmt: skip
        assert done.value.code in (0, None)
        return capsys.readouterr().out

    text = train(tmp_path / "whole.pt", 5)
    assert f"trained {kind} by dynamic training up to S = 2" in text
    assert "validation rollouts" in text
    saved = torch.load(tmp_path / "whole.pt", weights_only=True)
    assert saved["kind"] == kind
    assert saved["metadata"]["training"]["config"]["window_max"] == 2
    assert saved["metadata"]["training"]["config"]["backprop"] == "through-time"
    whole = _metrics(tmp_path / "whole_run")
    assert [row["window"] for row in whole] == ["1", "2"]
    # the best model of each S: its own weights; the best of all is the model written
    best = {
        size: torch.load(tmp_path / "whole_run" / f"best_window_{size}.pt", weights_only=True)
        for size in (1, 2)
    }
    by_epoch = {model["metadata"]["dynamic_training"]["epoch"]: model for model in best.values()}
    assert sorted(by_epoch) == [0, 1]
    overall = by_epoch[saved["metadata"]["training"]["best_epoch"]]["state_dict"]
    second = best[2]["state_dict"]
    assert any(
        not torch.equal(value, second[name]) for name, value in best[1]["state_dict"].items()
    )
    for name, value in saved["state_dict"].items():
        assert torch.equal(value, overall[name]), name

    train(tmp_path / "parts.pt", 1)
    first = _metrics(tmp_path / "parts_run")
    (tmp_path / "parts.pt").unlink()  # a run whose model is not written yet is resumed
    windows_trained = []
    train_step = DynamicTrainer._train_step

    def counted(trainer, batch):
        windows_trained.append(batch.size)
        return train_step(trainer, batch)

    monkeypatch.setattr(DynamicTrainer, "_train_step", counted)
    train(tmp_path / "parts.pt", 5)
    assert windows_trained == [2, 2, 2]  # only the second epoch: 11 windows of S = 2
    resumed = _metrics(tmp_path / "parts_run")
    assert resumed[0] == first[0]
    for ours, theirs in zip(resumed, whole, strict=True):
        assert {**ours, "elapsed_s": ""} == {**theirs, "elapsed_s": ""}
    parts = torch.load(tmp_path / "parts.pt", weights_only=True)
    for name, value in saved["state_dict"].items():
        assert torch.equal(value, parts["state_dict"][name]), name
