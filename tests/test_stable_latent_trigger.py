"""StABlE's latent trigger: the instantaneous latent grade criterion, its domain refitted for the
current weights before every run of the loop, and a resumed run equal to an uninterrupted one."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from md_support import rattled, single_thread  # noqa: F401
from stable_support import Interrupt, base_model, comparable, flat, interrupt_in_epoch

from stablemd.cli.main import main
from stablemd.core.errors import InputError
from stablemd.data.database import write_frames
from stablemd.diagnose.early_warning import (
    LatentDomain,
    LatentGradeCriterion,
    fit_latent_domain,
    latent_features,
)
from stablemd.fix.stable_training.config import StableConfig
from stablemd.fix.stable_training.loop import StableTrainer
from stablemd.fix.stable_training.targets import make_observable, reference_from_frames
from stablemd.fix.stable_training.workflow import system_of
from stablemd.md.forces import ModelForces
from stablemd.md.integrators import VelocityVerlet
from stablemd.md.runner import run
from stablemd.md.starts import state_from_atoms
from stablemd.md.steps import evaluate
from stablemd.models.painn import PaiNN
from stablemd.models.registry import model_fingerprint, save_potential
from stablemd.systems import get_system

pytestmark = pytest.mark.usefixtures("single_thread")

#: Between the training atoms' γ ≤ 1.01 and the squeezed atoms' γ ≈ 3 of the tiny model.
MAX_GRADE = 2.0
#: Runs of an untrained PaiNN in which the latent criterion (γ > 4) and the bond criterion
#: (0.75 Å) both flag replicas and the first learning phase ends after two epochs (f_min 0.25).
QUICK = dict(
    replicas=4, steps_per_epoch=20, sample_every=5, check_every=5, learning_rate=3e-3,
    qm_batch_size=8, max_cycles=3, latent_grade_criterion=True, max_grade=4.0,
    max_bond_deviation_A=0.75,
)  # fmt: skip


def squeezed(atoms, hydrogen: int, carbon: int, distance_A: float = 0.3):
    """A copy of ``atoms`` with H ``hydrogen`` moved onto C ``carbon``, ``distance_A`` away."""
    out = atoms.copy()
    bond = out.positions[hydrogen] - out.positions[carbon]
    out.positions[hydrogen] = out.positions[carbon] + distance_A * bond / np.linalg.norm(bond)
    return out


@pytest.fixture(scope="module")
def graded():
    """A tiny PaiNN, its 30 training frames (rattled ethanol) and the criterion on its domain."""
    torch.manual_seed(0)
    model = PaiNN([1, 6, 8], n_features=8, n_interactions=1, cutoff=3.0).double().eval()
    frames = rattled(get_system("ethanol").atoms, 30, scale=0.05)
    return model, frames, LatentGradeCriterion(fit_latent_domain(model, frames), MAX_GRADE)


def with_features(model, structures):
    """The replicas of ``structures`` with the forces and latent features of ``model``."""
    return evaluate(state_from_atoms(structures), ModelForces(model, outputs=("features",)))


def test_the_criterion_flags_exactly_the_replicas_with_an_atom_far_outside(graded):
    model, frames, criterion = graded
    ethanol = get_system("ethanol").atoms  # C 0 with H 1–3; C 4 with H 5–6; O 7 with H 8
    replicas = [frames[0], squeezed(ethanol, 3, 0), frames[7], squeezed(frames[2], 5, 4), frames[9]]
    state = with_features(model, replicas)
    grades = criterion.values(state)
    assert bool((grades[[0, 2, 4]] <= 1.01).all())  # training structures: inside by construction
    assert bool((grades[[1, 3]] > 2.5).all())
    assert criterion(state).tolist() == [False, True, False, True, False]
    # the runner freezes exactly those at the first check, naming the criterion
    result = run(state, VelocityVerlet(0.5), ModelForces(model, outputs=("features",)), 0,
                 [criterion], progress=False)  # fmt: skip
    assert result.unstable_reason == [None, criterion.name, None, criterion.name, None]
    assert result.state.active.tolist() == [True, False, True, False, True]
    # a frozen replica is not judged again
    assert criterion(result.state).tolist() == [False] * 5
    assert bool(criterion.values(result.state)[[1, 3]].isnan().all())


def test_permuting_the_replicas_permutes_the_flags(graded):
    model, frames, criterion = graded
    ethanol = get_system("ethanol").atoms
    replicas = [frames[0], squeezed(ethanol, 3, 0), frames[7], squeezed(frames[2], 6, 4)]
    order = [3, 0, 2, 1]
    grades = criterion.values(with_features(model, replicas))
    permuted = criterion.values(with_features(model, [replicas[k] for k in order]))
    assert torch.allclose(permuted, grades[order], rtol=1e-10, atol=0)
    assert criterion(with_features(model, [replicas[k] for k in order])).tolist() == [
        True, False, False, True,
    ]  # fmt: skip


def test_the_criterion_needs_features_a_domain_and_a_finite_threshold_above_one(graded):
    model, frames, criterion = graded
    with pytest.raises(InputError, match="no latent features"):
        criterion(evaluate(state_from_atoms(frames[:2]), ModelForces(model)))
    with pytest.raises(InputError, match="no latent domain"):
        LatentGradeCriterion(None)(with_features(model, frames[:2]))
    for bad in (1.0, 0.5, math.inf, math.nan):
        with pytest.raises(InputError, match="max_grade must be a finite number above 1"):
            LatentGradeCriterion(criterion.domain, bad)
    for bad in (1.0, math.inf):
        with pytest.raises(ValueError, match="max_grade"):
            StableConfig(latent_grade_criterion=True, max_grade=bad)
    with pytest.raises(ValueError, match="latent_grade_criterion: true"):
        StableConfig(max_grade=10.0)  # a threshold of a criterion that is off


# --- in the StABlE loop ----------------------------------------------------------------------


def _trainer(frames, run_dir, **options):
    system, _ = system_of(None, frames)
    config = StableConfig(**{**QUICK, **options})
    reference = reference_from_frames(make_observable("h_r", system), frames)
    model = base_model(frames)
    return StableTrainer(model, system, frames, reference, config, run_dir, progress=False)


class GradeCheck(LatentGradeCriterion):
    """The loop's latent criterion, checking at every call that its domain grades the state's
    features as a domain fitted on the current weights' features of the training frames does."""

    def __init__(self, trainer: StableTrainer):
        config = trainer.config
        super().__init__(None, config.max_grade, config.check_every)
        self.trainer = trainer
        self.calls: list[tuple[str, bool, bool]] = []  # phase, equal to the refit, to the base's
        self.base = fit_latent_domain(trainer.potential, trainer.train_frames)
        self.fitted: dict[str, LatentDomain] = {}  # by the weights' fingerprint

    def __call__(self, state):
        atoms = state.active_atoms
        features, numbers = state.outputs["features"][atoms], state.numbers[atoms]
        weights = model_fingerprint(self.trainer.potential)
        if weights not in self.fitted:
            features_now = latent_features(self.trainer.potential, self.trainer.train_frames)
            self.fitted[weights] = LatentDomain.fit(*features_now)
        now = self.fitted[weights]
        used = self.domain.grade(features, numbers)
        self.calls.append((
            self.trainer.phase,
            torch.equal(used, now.grade(features, numbers)),
            torch.equal(used, self.base.grade(features, numbers)),
        ))  # fmt: skip
        return super().__call__(state)


def test_every_run_grades_with_the_domain_of_the_current_weights(ethanol_frames, tmp_path):
    trainer = _trainer(ethanol_frames[:20], tmp_path, max_epochs=4)
    trainer.latent_criterion = check = GradeCheck(trainer)
    history = trainer.run().history
    assert [row["phase"] for row in history] == ["simulation", "learning", "learning", "simulation"]
    assert len(check.calls) > 8 and all(equal for _, equal, _ in check.calls)
    base = [base for _, _, base in check.calls]
    assert base[0] and not all(base)  # the weights moved: the base domain went stale
    assert len(check.fitted) == 3  # base weights, after the first step, after the second


@pytest.mark.slow  # ~10 s on a loaded 2-core machine: three runs, one cut, one split
def test_a_latent_triggered_run_logs_its_fractions_and_resumes_exactly(ethanol_frames, tmp_path):
    """Stopped in the MD of a learning epoch (its checkpoint written every step) and resumed, the
    run ends with the weights and log of an uninterrupted one, the criterion's fractions
    included; a run split between epochs too."""
    frames = ethanol_frames[:20]
    options = dict(max_epochs=4, checkpoint_every_seconds=1e-9)
    whole = _trainer(frames, tmp_path / "whole", **options).run()
    assert [row["cycle"] for row in whole.history] == [0, 0, 1, 1]
    fractions = [row["latent_unstable_fraction"] for row in whole.history]
    assert any(0 < f < 1 for f in fractions)  # the criterion decides something here
    unstable = [row["unstable_fraction"] for row in whole.history]
    assert all(u >= f for u, f in zip(unstable, fractions, strict=True))
    assert any(u > f for u, f in zip(unstable, fractions, strict=True))  # bonds count too
    with (tmp_path / "whole" / "log.csv").open() as handle:
        logged = [float(row["latent_unstable_fraction"]) for row in csv.DictReader(handle)]
    assert logged == fractions

    cut = _trainer(frames, tmp_path / "cut", **options)
    interrupt_in_epoch(cut, 2)  # the second learning epoch, at its 12th force call
    with pytest.raises(Interrupt):
        cut.run()
    assert list((tmp_path / "cut").glob("epoch-*-md.pt"))
    resumed = _trainer(frames, tmp_path / "cut", **options).run()
    assert torch.equal(flat(resumed.potential), flat(whole.potential))
    assert comparable(resumed.history) == comparable(whole.history)

    _trainer(frames, tmp_path / "split", max_epochs=3).run()  # ends a learning phase
    split = _trainer(frames, tmp_path / "split", max_epochs=4).run()
    assert torch.equal(flat(split.potential), flat(whole.potential))
    assert comparable(split.history) == comparable(whole.history)


def test_stable_train_command_with_the_latent_grade_criterion(ethanol_frames, tmp_path, capsys):
    write_frames(tmp_path / "train.db", ethanol_frames[:20])
    save_potential(base_model(ethanol_frames[:20]), tmp_path / "base.pt")
    (tmp_path / "quick.yaml").write_text("sample_every: 5\ncheck_every: 5\nqm_batch_size: 8\n")
    args = ["stable-train", "--model", str(tmp_path / "base.pt"), "--data",
            str(tmp_path / "train.db"), "--out", str(tmp_path / "stable.pt"),
            "--replicas", "4", "--steps-per-epoch", "20", "--max-epochs", "3", "--no-progress",
            "--config", str(tmp_path / "quick.yaml"), "--latent-grade-criterion",
            "--max-grade", "2"]  # fmt: skip
    with pytest.raises(SystemExit) as finished:
        main(args)
    assert finished.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "by the latent grade" in out
    with (tmp_path / "stable_run" / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(0 <= float(r["latent_unstable_fraction"]) <= 1 for r in rows)
    # the same run under another threshold is another run
    with pytest.raises(SystemExit) as refused:
        main([*args[:-1], "3", "--overwrite"])
    assert refused.value.code == 2
    assert "max_grade" in capsys.readouterr().err
