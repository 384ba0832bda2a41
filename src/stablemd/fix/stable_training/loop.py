"""The StABlE loop (paper Algorithm 1): MD that hunts instabilities, learning that fixes them.

Simulation phase: R replicas, started from training structures, run ``t`` steps per epoch with
the training criterion checked every ``check_every`` steps; unstable replicas freeze. Each
replica's state at the start of its last epoch is its anchor. When the unstable fraction
reaches f_max, learning starts.

Learning phase, one epoch, in the order of Algorithm 1 (lines 21–29): re-simulate, step,
test. Every replica restarts from its anchor (the near-unstable states), runs ``t`` steps with
the current model (only non-finite replicas stop), is sampled every ``S`` steps and judged by
the criterion. The samples are the ``t/S`` frames of each replica that this MD produced, never
the anchor it started from: the anchors do not depend on the parameters, so they carry nothing
for the Boltzmann estimator. Then one gradient step on L_obs + λ·L_QM: L_obs by the Boltzmann
estimator on the samples (global: one estimate over all samples, or one per replica; local: the
molecules of every sample, stratified by their deviation from the reference), L_QM on a
minibatch of the fixed training set (with ``lr_warmup_epochs``, the first steps of a phase at a
fraction of the rate). No new labels are ever made. Only then is the phase
tested: it ends if at most f_min of the replicas went unstable in this epoch's run, after
``max_learning_epochs`` steps, or when the learning-rate schedule cuts the rate for the
``max_lr_cuts`` + 1-th time; simulation then resumes from this run's last states (its unstable
replicas frozen). So every learning phase makes at least one update.

With ``latent_grade_criterion`` a replica is also unstable when the largest latent grade of its
atoms exceeds ``max_grade`` (:mod:`stablemd.diagnose.early_warning.grade_criterion`); its domain
is refitted on the training frames for the current weights before every MD run, so it is never
stale, and it keeps no state, so rewinding to the anchors and resuming need none.

Every epoch is logged (``log.csv``, ``stable_training.png``) and checkpointed (every
``checkpoint_every_epochs`` epochs, and after any epoch once ``checkpoint_every_seconds`` have
passed); rerunning with the same options resumes. An epoch's MD, which may take long, keeps its
own checkpoint (``epoch-<n>-md.pt``, at least every ``checkpoint_every_seconds``, removed when
the epoch is done), so a resumed run continues inside the epoch and, the samples of a learning
epoch included, gives what an uninterrupted run gives.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from stablemd.analysis.geometry import replica_numbers, replica_positions
from stablemd.core.batch import Batch
from stablemd.core.config_file import check_same_config
from stablemd.core.errors import InputError
from stablemd.core.files import (
    atomic_write,
    check_same_options,
    load_tagged_torch_file,
    save_torch_file,
)
from stablemd.core.throttle import PLOT_EVERY_S, Throttle
from stablemd.data.frames import FrameSet
from stablemd.diagnose.early_warning.grade_criterion import LatentGradeCriterion
from stablemd.fix.stable_training.config import StableConfig
from stablemd.fix.stable_training.estimator import boltzmann_gradient
from stablemd.fix.stable_training.local_samples import molecule_samples, select, stratify
from stablemd.fix.stable_training.plots import plot_stable_training
from stablemd.fix.stable_training.targets import ReferenceValue, TrainingObservable, make_observable
from stablemd.md.forces import ModelForces
from stablemd.md.monitoring import Criterion, Observer
from stablemd.md.runner import RunResult, run
from stablemd.md.starts import initial_state
from stablemd.md.state import MDState, state_from_dict, state_to_dict, take_replicas
from stablemd.models.latent_domain import fit_latent_domain
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import model_fingerprint
from stablemd.monitors.criteria import NonFinite, geometric_criterion
from stablemd.systems.system import System
from stablemd.training.loss import energy_force_loss
from stablemd.training.statistics import recentre_energies

if TYPE_CHECKING:
    from stablemd.training.workflow import TrainingFrames

#: /4: a learning epoch steps before it tests f_min (/3), and an epoch's MD resumes from its own
#: checkpoint; an older checkpoint would resume into a mix of loops, so it is refused.
FORMAT = "stablemd-stable-checkpoint/4"
#: Options that may change when a run is resumed.
BUDGET_FIELDS = (
    "max_cycles", "max_epochs", "max_learning_epochs", "max_time_minutes",
    "checkpoint_every_epochs", "checkpoint_every_seconds",
)  # fmt: skip
#: An epoch's MD checkpoints on time only (and at its end), never on a step count.
NO_STEP_CHECKPOINTS = 2**62
LOG_FIELDS = (
    "epoch", "cycle", "phase", "unstable_fraction", "obs_loss", "qm_loss", "gradient_norm",
    "learning_rate", "n_samples", "simulated_ps", "elapsed_s",
)  # fmt: skip
#: The log column of the latent grade criterion (``latent_grade_criterion``), when it is on.
LATENT_LOG_FIELD = "latent_unstable_fraction"


class _Sampler(Observer):
    """The positions of every active replica at each call after step ``after_step``, and which
    replica. The starting state (the anchors) is left out: the current parameters did not
    produce it, so it carries nothing for the Boltzmann estimator."""

    name = "stable_sampler"

    def __init__(self, every: int, after_step: int):
        super().__init__(every)
        self.after_step = after_step
        self.frames: list[torch.Tensor] = []
        self.replicas: list[torch.Tensor] = []

    def __call__(self, state: MDState) -> None:
        if state.step <= self.after_step:
            return
        active = state.active
        self.frames.append(replica_positions(state)[active].clone())
        self.replicas.append(torch.nonzero(active)[:, 0])

    def state_dict(self) -> dict:
        return {"frames": list(self.frames), "replicas": list(self.replicas)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.frames, self.replicas = list(state_dict["frames"]), list(state_dict["replicas"])


class _Flags(Observer):
    """Which replicas a criterion has flagged at any call (without freezing them)."""

    name = "stable_flags"

    def __init__(self, criterion: Criterion, n_replicas: int):
        super().__init__(criterion.every)
        self.criterion = criterion
        self.unstable = torch.zeros(n_replicas, dtype=torch.bool)

    def __call__(self, state: MDState) -> None:
        self.unstable |= self.criterion(state) & state.active

    def state_dict(self) -> dict:
        return {"unstable": self.unstable.clone()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.unstable = state_dict["unstable"].clone()


@dataclass
class StableResult:
    """The trained potential, one log row per epoch, wall time (s), the reference used, the
    change of the per-atom energy shift that re-centred the energies (eV/atom), and (set by
    :func:`~stablemd.fix.stable_training.workflow.stable_train`) where the base model's
    training frames were found in the data and the order matching them to a named system
    (system atom ``k`` is frame atom ``atom_order[k]``; None: same order or no name)."""

    potential: Potential
    history: list[dict]
    elapsed_s: float
    reference: ReferenceValue
    energy_recentred_eV_per_atom: float
    training_frames: TrainingFrames | None = None
    atom_order: np.ndarray | None = None


def training_criterion(system: System, config: StableConfig) -> Criterion:
    """The criterion that marks replicas unstable while training."""
    return geometric_criterion(
        system, config.max_bond_deviation_A, config.min_intermolecular_A,
        config.nonbonded_intramolecular, config.criterion, every=config.check_every,
    )  # fmt: skip


def training_observable(system: System, config: StableConfig) -> TrainingObservable:
    """The configured observable of ``system``; refused when it does not suit the estimator."""
    observable = make_observable(
        config.observable_name, system, config.observable_r_max_A, config.observable_dr_A,
        config.observable_sigma_A,
    )  # fmt: skip
    if observable.local != (config.estimator == "local"):
        kind = "local" if observable.local else "global"
        raise InputError(
            f"observable {observable.name} is {kind}; it does not suit the "
            f"{config.estimator} estimator"
        )
    return observable


class StableTrainer:
    """One StABlE run of ``potential`` on ``system``; ``StableTrainer(...).run()``.

    ``train_frames`` (labelled ``Atoms``) give the starting structures, L_QM and, with
    ``latent_grade_criterion``, the latent domain; ``reference`` is g_ref of the configured
    observable.
    """

    def __init__(
        self,
        potential: Potential,
        system: System,
        train_frames: list[Atoms],
        reference: ReferenceValue,
        config: StableConfig,
        run_dir: Path,
        progress: bool = True,
    ):
        self.potential, self.system, self.config = potential, system, config
        self.run_dir, self.progress = Path(run_dir), progress
        self.observable = training_observable(system, config)
        self.reference_info, self.reference = reference, reference.value
        self.dtype = next(potential.parameters()).dtype
        self.qm_frames = FrameSet(train_frames, self.dtype)
        #: what the result depends on besides the options: a checkpoint of others is refused
        self.inputs = {
            "system": system.name,
            "base_model": model_fingerprint(potential),
            "training_frames": self.qm_frames.fingerprint,
            "reference": hashlib.sha256(
                np.round(self.reference.detach().double().numpy(), 12).tobytes()
            ).hexdigest(),
        }
        self.criterion = training_criterion(system, config)
        #: refitted for the current weights before every run (:meth:`_refit_latent_domain`)
        self.latent_criterion = None
        if config.latent_grade_criterion:
            self.latent_criterion = LatentGradeCriterion(None, config.max_grade, config.check_every)
        self.train_frames = train_frames
        self.integrator = config.integrator()
        self.forces = ModelForces(potential, ("features",) if self.latent_criterion else ())
        self.parameters = [p for p in potential.parameters() if p.requires_grad]
        self._new_optimizer()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.state = initial_state(train_frames, config.replicas, config.temperature_K, config.seed)
        self.anchor: MDState | None = None
        #: replicas frozen because the latent grade criterion flagged them (None: it is off)
        self.latent_flagged = None
        if self.latent_criterion is not None:
            self.latent_flagged = torch.zeros(config.replicas, dtype=torch.bool)
        self.phase, self.epoch, self.cycle, self.learning_epochs = "simulation", 0, 0, 0
        self.simulated_ps, self.elapsed_before = 0.0, 0.0
        self.history: list[dict] = []
        self.plot = Throttle(
            lambda: plot_stable_training(self.history, self.run_dir / "stable_training.png"),
            PLOT_EVERY_S,
        )

    def _new_optimizer(self) -> None:
        """A fresh optimiser at the configured learning rate, with a plateau schedule on the
        unstable fraction of the learning runs: every learning phase starts anew, as in the
        authors' code (a schedule carried across phases would compare unrelated states)."""
        config = self.config
        optimizer = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
        self.optimizer = optimizer(self.parameters, lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=config.lr_factor, patience=config.lr_patience
        )
        self.lr_cuts = 0

    # --- checkpoint ---------------------------------------------------------------------------

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _epoch_md_path(self, epoch: int | None = None) -> Path:
        """The checkpoint of the MD of ``epoch`` (default: the current one)."""
        return self.run_dir / f"epoch-{self.epoch if epoch is None else epoch}-md.pt"

    def _remove_other_epoch_checkpoints(self) -> None:
        """MD checkpoints of epochs other than the current one (left by a kill between the
        end of an epoch and their removal) belong to no epoch still to be run."""
        for path in self.run_dir.glob("epoch-*-md.pt"):
            if path != self._epoch_md_path():
                path.unlink()

    def _run_md(self, start: MDState, monitors: list) -> RunResult:
        """``steps_per_epoch`` steps of MD from ``start``, resumed from the epoch's checkpoint."""
        return run(
            start, self.integrator, self.forces, self.config.steps_per_epoch, monitors,
            checkpoint=self._epoch_md_path(), checkpoint_every=NO_STEP_CHECKPOINTS,
            checkpoint_seconds=self.config.checkpoint_every_seconds, progress=False,
        )  # fmt: skip

    def _save(self) -> None:
        save_torch_file(
            {
                "format": FORMAT,
                "config": self.config.model_dump(),
                "inputs": self.inputs,
                "model": self.potential.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "integrator": self.integrator.state_dict(),
                "state": state_to_dict(self.state),
                "anchor": None if self.anchor is None else state_to_dict(self.anchor),
                "latent_flagged": self.latent_flagged,
                "counters": {
                    "phase": self.phase,
                    "epoch": self.epoch,
                    "cycle": self.cycle,
                    "learning_epochs": self.learning_epochs,
                    "lr_cuts": self.lr_cuts,
                    "simulated_ps": self.simulated_ps,
                    "elapsed": self._elapsed(),
                },  # fmt: skip
                "history": self.history,
            },
            self.checkpoint_path,
        )
        self._saved_at = time.perf_counter()

    def _restore(self) -> None:
        saved = load_tagged_torch_file(self.checkpoint_path, FORMAT, "StABlE checkpoint")
        check_same_config(self.checkpoint_path, saved["config"], self.config, BUDGET_FIELDS)
        check_same_options(self.checkpoint_path, saved.get("inputs", {}), self.inputs)
        self.potential.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.generator.set_state(saved["generator"])
        self.integrator.load_state_dict(saved["integrator"])
        self.state = state_from_dict(saved["state"])
        self.anchor = None if saved["anchor"] is None else state_from_dict(saved["anchor"])
        self.latent_flagged = saved.get("latent_flagged")  # absent before the criterion existed
        counters = saved["counters"]
        self.phase, self.epoch, self.cycle = counters["phase"], counters["epoch"], counters["cycle"]
        self.learning_epochs, self.lr_cuts = counters["learning_epochs"], counters["lr_cuts"]
        self.simulated_ps, self.elapsed_before = counters["simulated_ps"], counters["elapsed"]
        self.history = saved["history"]

    # --- phases -------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._started

    def _finished(self) -> bool:
        config = self.config
        limit = config.max_time_minutes
        out_of_time = limit is not None and self._elapsed() > 60 * limit
        return self.cycle >= config.max_cycles or self.epoch >= config.max_epochs or out_of_time

    def _criteria(self) -> list[Criterion]:
        """The criteria that mark a replica unstable: the latent grade criterion (when on) before
        the geometric one, so a replica both flag at one check is recorded as the former's."""
        latent = [] if self.latent_criterion is None else [self.latent_criterion]
        return [*latent, self.criterion]

    def _refit_latent_domain(self) -> None:
        """Fit the latent grade criterion's domain on the training frames for the current
        weights, unless it is already theirs: before every run, so it is never stale. The fit
        is deterministic, so a resumed run refits the domain an uninterrupted one used."""
        criterion = self.latent_criterion
        if criterion is None:
            return
        if criterion.domain is None or criterion.domain.model != model_fingerprint(self.potential):
            criterion.domain = fit_latent_domain(self.potential, self.train_frames)

    def _latent_row(self) -> dict:
        """The log's fraction of replicas frozen by the latent grade criterion (when on)."""
        if self.latent_flagged is None:
            return {}
        return {LATENT_LOG_FIELD: float(self.latent_flagged.double().mean())}

    def _simulation_epoch(self) -> dict:
        self._refit_latent_domain()
        # prepared first, so an anchor holds its forces and thermostat variables of its time
        state = self.integrator.prepare(self.state, self.forces)
        self.anchor = state.clone() if self.anchor is None else take_replicas(
            state, self.anchor, ~state.active
        )  # fmt: skip
        result = self._run_md(state, [*self._criteria(), NonFinite(every=self.config.check_every)])
        self.state = result.state
        self.simulated_ps += (result.state.step - state.step) * self.config.timestep_fs / 1000
        if self.latent_criterion is not None:
            reasons = [reason == self.latent_criterion.name for reason in result.unstable_reason]
            self.latent_flagged |= torch.tensor(reasons, dtype=torch.bool)
        unstable = 1.0 - float(self.state.active.double().mean())
        if unstable >= self.config.f_max:
            self.phase, self.learning_epochs = "learning", 0
            self._new_optimizer()
        row = {"phase": "simulation", "unstable_fraction": unstable, "learning_rate": 0.0}
        return {**row, **self._latent_row()}

    def _learning_epoch(self) -> dict:
        """Re-simulate from the anchors, take one gradient step, then decide whether the phase
        ends (Algorithm 1, lines 21–29: the test of f_min follows the step, so a phase always
        makes at least one update)."""
        config = self.config
        self._refit_latent_domain()
        start = replace(
            self.anchor.clone(),
            active=torch.ones(self.anchor.n_systems, dtype=torch.bool),
            forces=None,
            potential_energy=None,
        )
        sampler = _Sampler(config.sample_every, after_step=start.step)
        flags = [_Flags(criterion, start.n_systems) for criterion in self._criteria()]
        result = self._run_md(start, [sampler, *flags, NonFinite(every=config.sample_every)])
        self.simulated_ps += (result.state.step - start.step) * config.timestep_fs / 1000
        unstable = ~result.state.active
        for flagged in flags:
            unstable = unstable | flagged.unstable
        fraction = float(unstable.double().mean())
        rate = self.optimizer.param_groups[0]["lr"]
        step = self._gradient_step(sampler, start)
        self.learning_epochs += 1
        self.scheduler.step(fraction)
        self.lr_cuts += self.optimizer.param_groups[0]["lr"] < rate
        if (
            fraction <= config.f_min
            or self.learning_epochs >= config.max_learning_epochs
            or self.lr_cuts > config.max_lr_cuts
        ):
            # the forces were computed before this epoch's step: the new weights recompute them
            self.state = replace(
                result.state, active=~unstable, forces=None, potential_energy=None, outputs={}
            )
            self.phase, self.cycle = "simulation", self.cycle + 1
            if self.latent_criterion is not None:  # flags[0]: the replicas it flagged
                self.latent_flagged = flags[0].unstable.clone()  # (the next simulation's frozen)
        row = {"phase": "learning", "unstable_fraction": fraction, **step}
        if self.latent_criterion is not None:
            row[LATENT_LOG_FIELD] = float(flags[0].unstable.double().mean())
        return row

    def _samples(self, sampler: _Sampler, like: MDState):
        """Finite sampled frames as a batch, their observables [n, d], local samples, groups."""
        frames, replicas = torch.cat(sampler.frames), torch.cat(sampler.replicas)
        finite = torch.isfinite(frames).all(-1).all(-1)
        frames, replicas = frames[finite], replicas[finite]
        counts = torch.bincount(replicas, minlength=like.n_systems)
        keep = counts[replicas] >= 2
        frames, replicas = frames[keep], replicas[keep]
        if len(frames) < 2:
            raise InputError("StABlE: fewer than two finite samples; lower the time step")
        n_frames, n_atoms = frames.shape[:2]
        numbers = replica_numbers(like)
        cell = like.cell[:1].expand(n_frames, 3, 3)
        pbc = like.pbc[:1].expand(n_frames, 3)
        periodic = bool(pbc.any())
        values = self.observable(frames, *((cell, pbc) if periodic else (None, None)))
        batch = Batch(
            positions=frames.reshape(-1, 3).to(self.dtype),
            numbers=numbers.repeat(n_frames),
            system_index=torch.arange(n_frames).repeat_interleave(n_atoms),
            cell=cell.to(self.dtype),
            pbc=pbc,
        )
        if not self.observable.local:
            return batch, values, None, replicas if self.config.estimate_per == "replica" else None
        values = values.reshape(-1, values.shape[-1])
        local = molecule_samples(batch, self.system.molecule_index)
        deviation = (values - self.reference).norm(dim=-1)
        seed = self.config.seed + self.epoch
        chosen = stratify(deviation, self.config.local_bins, self.config.local_per_bin, seed)
        return batch, values[chosen], select(local, chosen), None

    def _gradient_step(self, sampler: _Sampler, like: MDState) -> dict:
        """One optimizer step on L_obs + λ·L_QM; returns both losses, the gradient norm before
        clipping, the number of samples and the rate of the step."""
        config = self.config
        batch, values, local_samples, groups = self._samples(sampler, like)
        estimate, gradient = boltzmann_gradient(
            self.potential, batch, values, self.reference, config.temperature_K,
            local_samples, groups, config.frames_per_pass,
        )  # fmt: skip
        qm_loss = self._qm_loss()
        qm_gradient = torch.autograd.grad(
            qm_loss, self.parameters, allow_unused=True, materialize_grads=True
        )
        for parameter, obs, qm in zip(self.parameters, gradient, qm_gradient, strict=True):
            parameter.grad = config.obs_weight * obs + config.qm_weight * qm
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, config.gradient_clip)
        rate = self._warmed_up_step()
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "obs_loss": estimate.loss, "qm_loss": float(qm_loss.detach()),
            "gradient_norm": float(norm), "n_samples": estimate.n_samples, "learning_rate": rate,
        }  # fmt: skip

    def _warmed_up_step(self) -> float:
        """The optimiser's step at its rate times the warm-up factor (learning epoch k of a
        phase, from 0: (k + 1) / ``lr_warmup_epochs``, at most 1); returns the rate used. The
        schedule's own rate is restored exactly, so neither the plateau schedule nor the count
        of its cuts ever sees the warm-up factor."""
        warmup = self.config.lr_warmup_epochs
        factor = min(1.0, (self.learning_epochs + 1) / warmup) if warmup else 1.0
        groups = self.optimizer.param_groups
        rates = [group["lr"] for group in groups]
        for group, rate in zip(groups, rates, strict=True):
            group["lr"] = rate * factor
        self.optimizer.step()
        for group, rate in zip(groups, rates, strict=True):
            group["lr"] = rate
        return rates[0] * factor

    def _qm_loss(self) -> torch.Tensor:
        """Energy-and-force loss on a random minibatch of the fixed training set."""
        n = len(self.qm_frames)
        order = torch.randperm(n, generator=self.generator)[: self.config.qm_batch_size]
        batch = self.qm_frames.batch(order.tolist())
        out = predict(self.potential, batch, create_graph=True)
        return energy_force_loss(
            batch, out["energy"], out["forces"], self.config.energy_weight,
            self.config.forces_weight,
        )  # fmt: skip

    # --- driver -------------------------------------------------------------------------------

    def _log(self, row: dict) -> None:
        full = {"obs_loss": math.nan, "qm_loss": math.nan, "gradient_norm": math.nan, **row}
        full.setdefault("n_samples", 0)
        full.update(
            epoch=self.epoch, cycle=self.cycle, simulated_ps=round(self.simulated_ps, 4),
            elapsed_s=round(self._elapsed(), 2),
        )  # fmt: skip
        self.history.append(full)
        fields = LOG_FIELDS if self.latent_criterion is None else (*LOG_FIELDS, LATENT_LOG_FIELD)
        with atomic_write(self.run_dir / "log.csv") as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.history)
        self.plot()

    def run(self) -> StableResult:
        """Alternate simulation and learning until the budget; returns the trained potential."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._started = time.perf_counter()
        if self.checkpoint_path.is_file():
            self._restore()
            self._remove_other_epoch_checkpoints()
        else:  # a new run: no MD checkpoint is its own; and a rerun with other options is
            for path in self.run_dir.glob("epoch-*-md.pt"):  # refused even in the first epoch
                path.unlink()
            self._save()
        self._saved_at = time.perf_counter()
        columns = [
            TextColumn("[bold]StABlE[/] epoch {task.completed}"),
            BarColumn(),
            TextColumn("cycle {task.fields[cycle]} · {task.fields[phase]}"),
            TextColumn("unstable {task.fields[unstable]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),  # at most: the run may end sooner (max_cycles)
        ]
        with Progress(*columns, disable=not self.progress) as bar:
            task = bar.add_task("", total=self.config.max_epochs, completed=self.epoch,
                                cycle=self.cycle, phase=self.phase, unstable="–")  # fmt: skip
            while not self._finished():
                if self.phase == "simulation":
                    row = self._simulation_epoch()
                else:
                    row = self._learning_epoch()
                self._log(row)
                self.epoch += 1
                due = time.perf_counter() - self._saved_at > self.config.checkpoint_every_seconds
                if self.epoch % self.config.checkpoint_every_epochs == 0 or due:
                    self._save()
                self._epoch_md_path(self.epoch - 1).unlink(missing_ok=True)
                bar.update(task, completed=self.epoch, cycle=self.cycle, phase=self.phase,
                           unstable=f"{row['unstable_fraction']:.2f}")  # fmt: skip
        self._save()
        if self.history:
            self.plot.flush()
        # L_obs cannot see a constant energy per atom (its weights sum to zero) and L_QM weighs
        # energies lightly, so the mean energy drifts; re-centre it on the training frames.
        recentred = recentre_energies(self.potential.eval(), self.qm_frames)
        return StableResult(
            self.potential, self.history, self._elapsed(), self.reference_info, recentred
        )
