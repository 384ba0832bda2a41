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
from ase.calculators.singlepoint import SinglePointCalculator
from md_support import single_thread  # noqa: F401
from stable_support import Interrupt, base_model, comparable, flat, interrupt_in_epoch
from torch import nn

from stablemd.analysis.geometry import replica_positions
from stablemd.cli.main import main
from stablemd.core.batch import Batch
from stablemd.core.errors import InputError
from stablemd.core.units import KB_EV_PER_K
from stablemd.data.database import read_frames, write_frames
from stablemd.data.frames import FrameSet
from stablemd.diagnose.early_warning.model_file import stored_early_warning
from stablemd.fix.stable_training.config import StableConfig
from stablemd.fix.stable_training.loop import StableTrainer
from stablemd.fix.stable_training.targets import (
    ReferenceValue,
    make_observable,
    reference_from_file,
    reference_from_frames,
)
from stablemd.fix.stable_training.workflow import reference_value, system_of
from stablemd.md.monitoring import Criterion
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import (
    load_potential,
    model_fingerprint,
    save_potential,
)
from stablemd.oracles import registry as oracle_registry
from stablemd.oracles.spcfw import SPCFwCalculator
from stablemd.oracles.xtb import XTBCalculator
from stablemd.systems import get_system

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


def _trainer(frames, run_dir, model=None, **options):
    system, _ = system_of(None, frames)
    config = StableConfig(**{**QUICK, **options})
    reference = reference_from_frames(make_observable("h_r", system), frames)
    model = base_model(frames) if model is None else model
    return StableTrainer(model, system, frames, reference, config, run_dir, progress=False)


def test_loop_learns_from_observables_without_new_labels(ethanol_frames, tmp_path, no_oracle):
    trainer = _trainer(ethanol_frames[:20], tmp_path / "run", max_epochs=5)
    before = flat(trainer.potential).clone()
    result = trainer.run()
    phases = [row["phase"] for row in result.history]
    # the untrained model fails at once, so the run goes straight into learning
    assert phases[0] == "simulation" and result.history[0]["unstable_fraction"] >= 0.75
    steps = [row for row in result.history if not math.isnan(row["obs_loss"])]
    assert steps and all(row["n_samples"] >= 8 and row["qm_loss"] > 0 for row in steps)
    assert not torch.equal(before, flat(result.potential))
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
    assert torch.equal(flat(resumed.potential), flat(whole.potential))
    with pytest.raises(InputError, match="replicas"):
        _trainer(frames, tmp_path / "parts", max_epochs=7, replicas=6).run()


def test_a_rerun_with_another_base_model_or_other_frames_is_refused(ethanol_frames, tmp_path):
    _trainer(ethanol_frames[:20], tmp_path, max_epochs=1).run()
    base = base_model(ethanol_frames[:20])
    with pytest.raises(InputError, match="this run used training_frames="):
        _trainer(ethanol_frames[20:40], tmp_path, model=base, max_epochs=2).run()
    other = base_model(ethanol_frames[:20])
    other.energy_scaling.shift += 0.1
    with pytest.raises(InputError, match="this run used base_model="):
        _trainer(ethanol_frames[:20], tmp_path, model=other, max_epochs=2).run()


def test_a_run_killed_inside_an_epoch_continues_inside_it(ethanol_frames, tmp_path):
    """An epoch's MD checkpoints on time (here: every step); a run interrupted in the MD of a
    learning epoch resumes there, samples included, and ends as an uninterrupted run."""
    frames = ethanol_frames[:20]
    options = dict(max_epochs=3, checkpoint_every_seconds=1e-9)
    whole = _trainer(frames, tmp_path / "whole", **options).run()
    assert [row["phase"] for row in whole.history] == ["simulation", "learning", "learning"]
    cut = _trainer(frames, tmp_path / "cut", **options)
    interrupt_in_epoch(cut, 2)  # at its 12th force call
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
    assert torch.equal(flat(result.potential), flat(whole.potential))
    assert comparable(result.history) == comparable(whole.history)
    assert not list((tmp_path / "cut").glob("epoch-*-md.pt"))


@pytest.mark.parametrize("warmup", [0, 3])
def test_each_learning_phase_restarts_its_schedule_and_ends_on_it(ethanol_frames, tmp_path, warmup):
    """As in the authors' code: the rate is cut when the learning runs' unstable fraction stops
    falling, the phase ends at the cut after ``max_lr_cuts``, and the next starts afresh. With
    a warm-up each step's rate is the schedule's times (k + 1)/3, and only the schedule's own
    cuts count."""
    options = dict(lr_patience=0, max_lr_cuts=1, f_min=0.0, max_learning_epochs=50)
    trainer = _trainer(
        ethanol_frames[:20], tmp_path, max_epochs=14, lr_warmup_epochs=warmup, **options
    )
    result = trainer.run()
    phases = [list(rows) for learning, rows in groupby(result.history, _is_learning) if learning]
    assert len(phases) >= 2

    def schedule_rates(rows: list[dict]) -> list[float]:
        factors = [min(1.0, (k + 1) / warmup) if warmup else 1.0 for k in range(len(rows))]
        return [round(row["learning_rate"] / f, 12) for row, f in zip(rows, factors, strict=True)]

    for rows in phases:
        rates = schedule_rates(rows)
        assert rates[0] == QUICK["learning_rate"]
        assert rates == sorted(rates, reverse=True)
        assert all(not math.isnan(row["obs_loss"]) for row in rows)  # every epoch steps
    for rows in phases[:-1]:  # an ended phase: neither at f_min nor out of epochs, so it ended
        # at the cut after max_lr_cuts = 1 cut, and stepped at the old rate in that epoch too
        assert rows[-1]["unstable_fraction"] > 0 and len(rows) < 50
        assert schedule_rates(rows)[-1] == pytest.approx(QUICK["learning_rate"] * 0.2)


def _is_learning(row: dict) -> bool:
    return row["phase"] == "learning"


# --- a case with a known answer: a harmonic dimer whose bond length the loop must move ---------


class HarmonicDimer(Potential):
    """U(r) = ½ k (r − r0)² for one two-atom molecule, split evenly over both atoms. The rest
    length r0 (Å) is the only parameter, and E[r] rises with it."""

    kind = "test-harmonic-dimer"

    def __init__(self, r0_A: float = 1.1, k_eV_per_A2: float = 20.0):
        super().__init__(elements=[7], cutoff=10.0)
        self.r0 = nn.Parameter(torch.tensor(r0_A, dtype=torch.float64))
        self.k = k_eV_per_A2
        self.double()

    def hyperparameters(self):
        return {"r0_A": float(self.r0), "k_eV_per_A2": self.k}

    def raw_outputs(self, batch, neighbors, direct_forces, features, once_differentiable=False):
        pairs = batch.positions.reshape(-1, 2, 3)
        energy = 0.5 * self.k * ((pairs[:, 1] - pairs[:, 0]).norm(dim=-1) - self.r0) ** 2
        return {"raw_energies": (energy[:, None] / 2).expand(-1, 2).reshape(-1)}


def exact_obs_loss(r0_A: float, k_eV_per_A2: float, reference_A: float, temperature_K: float):
    """L_obs = (E[r] − r_ref)² of the dimer, E[r] by quadrature over p(r) ∝ r² exp(−U/k_BT)."""
    r = torch.linspace(0.5, 2.0, 150_001, dtype=torch.float64)
    log_p = 2 * torch.log(r) - 0.5 * k_eV_per_A2 * (r - r0_A) ** 2 / (KB_EV_PER_K * temperature_K)
    p = torch.exp(log_p - log_p.max())
    return float((torch.trapezoid(p * r, r) / torch.trapezoid(p, r) - reference_A) ** 2)


class Unstable(Criterion):
    """Flags every replica at each of its first ``times`` calls (at every call when None)."""

    name = "test_unstable"

    def __init__(self, every: int, times: int | None = None):
        super().__init__(every)
        self.times, self.calls = times, 0

    def __call__(self, state):
        self.calls += 1
        return torch.full((state.n_systems,), self.times is None or self.calls <= self.times)


def _dimer_trainer(run_dir, reference_A: float, flag_times: int | None = None, **options):
    """StABlE of a harmonic N₂ on its bond length; labels from the model itself, λ = 0. The
    criterion flags every replica (on its first ``flag_times`` calls), so the first epoch
    starts learning."""
    model = HarmonicDimer()
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(8):
        atoms = Atoms("N2", positions=[[0, 0, 0], [1.1, 0, 0]])
        atoms.positions += rng.normal(scale=0.02, size=(2, 3))
        out = predict(model, Batch.from_atoms([atoms], dtype=torch.float64))
        energy, forces = float(out["energy"].detach()), out["forces"].detach().numpy()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    config = StableConfig(**{**QUICK, "observable": "bond_lengths", "qm_weight": 0.0, **options})
    reference = ReferenceValue(torch.tensor([reference_A], dtype=torch.float64), 8.0, "test")
    trainer = StableTrainer(
        model, system_of(None, frames)[0], frames, reference, config, run_dir, progress=False
    )
    trainer.criterion = Unstable(config.check_every, flag_times)
    return trainer


def test_a_learning_step_moves_the_observable_towards_the_reference(tmp_path):
    """The reference bond length is 0.3 Å above the dimer's, so the step must raise r0 and so
    lower the exact L_obs. (For a harmonic bond the estimated ∂L/∂r0 is (2k/k_BT)(ḡ − r_ref)
    times the samples' variance, so its sign is that of ḡ − r_ref whatever the MD noise.)"""
    reference = 1.4
    trainer = _dimer_trainer(tmp_path, reference, max_epochs=2)
    before, temperature = trainer.potential.r0.item(), trainer.config.temperature_K
    result = trainer.run()
    assert [row["phase"] for row in result.history] == ["simulation", "learning"]
    assert 0.2**2 < result.history[1]["obs_loss"] < 0.4**2  # ḡ within 0.1 Å of r0
    after = result.potential.r0.item()
    assert after > before
    k = trainer.potential.k
    assert exact_obs_loss(after, k, reference, temperature) < exact_obs_loss(
        before, k, reference, temperature
    )


def test_a_learning_phase_steps_even_when_its_first_run_is_below_f_min(tmp_path):
    """The replicas fail once in simulation; every re-simulation is stable (fraction 0 ≤ f_min).
    Algorithm 1 still takes its step before it tests f_min, and then the phase ends."""
    trainer = _dimer_trainer(tmp_path, 1.4, flag_times=1, max_epochs=3)
    before = trainer.potential.r0.item()
    history = trainer.run().history
    assert [row["phase"] for row in history] == ["simulation", "learning", "simulation"]
    assert history[1]["unstable_fraction"] == 0.0 and not math.isnan(history[1]["obs_loss"])
    assert history[2]["cycle"] == 1
    assert trainer.potential.r0.item() != before


def test_the_samples_are_the_frames_md_made_never_the_anchors(tmp_path, monkeypatch):
    """The anchors do not depend on the parameters: each learning run's samples are the t/S
    frames per replica after its start, none of them equal to the anchor it started from."""
    seen = []
    samples = StableTrainer._samples

    def spy(self, sampler, like):
        frames, replicas = torch.cat(sampler.frames), torch.cat(sampler.replicas)
        seen.append((frames, replicas, replica_positions(like).clone()))
        return samples(self, sampler, like)

    monkeypatch.setattr(StableTrainer, "_samples", spy)
    history = _dimer_trainer(tmp_path, 1.4, max_epochs=3).run().history
    per_replica = QUICK["steps_per_epoch"] // QUICK["sample_every"]
    assert len(seen) == 2  # two learning epochs, from the same anchors
    for frames, replicas, anchors in seen:
        assert torch.bincount(replicas).tolist() == [per_replica] * QUICK["replicas"]
        assert not bool((frames == anchors[replicas]).all(-1).all(-1).any())
    assert [row["n_samples"] for row in history[1:]] == [QUICK["replicas"] * per_replica] * 2


def test_each_learning_phase_warms_its_rate_up(tmp_path):
    """With a warm-up of 2 epochs every phase steps at half the rate, then the full rate; a
    fresh Adam's first step moves the dimer's one weight by the rate it is given."""
    rate, options = QUICK["learning_rate"], dict(max_learning_epochs=3, lr_patience=100)
    history = (
        _dimer_trainer(tmp_path / "whole", 1.4, max_epochs=8, lr_warmup_epochs=2, **options)
        .run()
        .history
    )
    assert [row["phase"][0] for row in history] == list("slllslll")
    rates = [row["learning_rate"] for row in history if _is_learning(row)]
    assert rates == [rate / 2, rate, rate] * 2
    for warmup, first_step in ((2, rate / 2), (0, rate)):
        trainer = _dimer_trainer(
            tmp_path / f"w{warmup}", 1.4, max_epochs=2, lr_warmup_epochs=warmup
        )
        before = trainer.potential.r0.item()
        after = trainer.run().potential.r0.item()
        assert after - before == pytest.approx(first_step, rel=1e-6)


@pytest.mark.parametrize("split", [2, 3])
def test_a_run_split_in_or_at_the_end_of_a_learning_phase_resumes_exactly(tmp_path, split):
    """Phases: simulation, learning, learning (ends on max_learning_epochs), simulation, …;
    the run is split inside the phase (its step counter and optimiser must carry over) and
    right after the epoch that steps and ends it."""
    options = dict(max_learning_epochs=2, lr_patience=100, lr_warmup_epochs=2)
    whole = _dimer_trainer(tmp_path / "whole", 1.4, max_epochs=6, **options).run()
    assert [row["phase"][0] for row in whole.history] == list("sllsll")
    assert [row["cycle"] for row in whole.history] == [0, 0, 1, 1, 1, 2]
    _dimer_trainer(tmp_path / "parts", 1.4, max_epochs=split, **options).run()
    resumed = _dimer_trainer(tmp_path / "parts", 1.4, max_epochs=6, **options).run()
    assert [row["cycle"] for row in resumed.history] == [row["cycle"] for row in whole.history]
    assert resumed.potential.r0.item() == whole.potential.r0.item()


def test_a_checkpoint_of_the_old_loop_is_refused(tmp_path):
    _dimer_trainer(tmp_path, 1.4, max_epochs=1).run()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    saved["format"] = "stablemd-stable-checkpoint/2"
    torch.save(saved, tmp_path / "checkpoint.pt")
    with pytest.raises(InputError, match="'stablemd-stable-checkpoint/2'"):
        _dimer_trainer(tmp_path, 1.4, max_epochs=2).run()


def test_observable_must_suit_the_estimator(ethanol_frames, tmp_path):
    with pytest.raises(InputError, match="local"):
        _trainer(ethanol_frames[:4], tmp_path, observable="molecule_bond_length")


def test_config_rejects_inverted_thresholds():
    with pytest.raises(ValueError, match="f_min"):
        StableConfig(f_min=0.8, f_max=0.5)
    with pytest.raises(ValueError, match="two samples per replica"):
        StableConfig(steps_per_epoch=20, sample_every=20, check_every=20)
    with pytest.raises(ValueError, match="constant volume"):
        StableConfig(pressure_bar=1.0)


def test_reference_reweighting_and_files(ethanol_frames, tmp_path):
    system, _ = system_of(None, ethanol_frames)
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
    system, _ = system_of(None, ethanol_frames)
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
    model = base_model(ethanol_frames[:20])
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
    # the early warning refitted for the new weights on the 20 frames (9 atoms, 6 of them H)
    domain = stored_early_warning(stable).domain
    assert domain.model == model_fingerprint(stable) != model_fingerprint(model)
    assert domain.elements[1].n_training == 20 * 6
    out = " ".join(capsys.readouterr().out.split())
    assert "StABlE: 3 epochs" in out
    assert "no frame of train.db was used to train or validate the model; L_QM uses all" in out

    with pytest.raises(SystemExit) as exit_info:  # the finished model is never replaced silently
        main([*args, "--config", str(tmp_path / "quick.yaml")])
    assert exit_info.value.code == 2
    assert "stable.pt: already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # nor continued under other options
        main([*args, "--config", str(tmp_path / "quick.yaml"), "--temperature", "300",
              "--overwrite"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "temperature_K" in capsys.readouterr().err


def test_training_frames_must_be_the_named_system(ethanol_frames):
    """Frames of another molecule, or in two atom orders, are refused with a clear message;
    frames in another order than the system's get the system in their order."""
    ethanol = get_system("ethanol").atoms  # C H H H C H H O H
    system, order = system_of("ethanol", [ethanol, ethanol.copy()])
    assert system.name == "ethanol" and order is None
    with pytest.raises(InputError, match="the training frames: frame 0 has 9 atoms"):
        system_of("aspirin", [ethanol])
    with pytest.raises(InputError, match="the training frames: frame 1, atom 0 is H where"):
        system_of("ethanol", [ethanol, ethanol[::-1]])
    # ASE's CH3CH2OH lists its atoms in another order: the system follows the frames
    system, order = system_of("ethanol", ethanol_frames)
    assert (ethanol_frames[0].numbers[order] == ethanol.numbers).all()
    derived, _ = system_of(None, ethanol_frames)
    assert (system.atoms.numbers == ethanol_frames[0].numbers).all()
    assert {tuple(b) for b in system.bonds.tolist()} == {tuple(b) for b in derived.bonds.tolist()}
