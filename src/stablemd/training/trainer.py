"""Energy-and-force training with EMA, plateau schedule, early stopping and resumable checkpoints.

The run directory holds ``checkpoint.pt`` (everything needed to continue, written every
``checkpoint_every_seconds`` and after every epoch) and ``metrics.csv`` (one row per epoch).
Rerunning with the same run directory continues from the checkpoint: the batch order of every
epoch is a pure function of (seed, epoch), so a resumed run sees the same batches as an
uninterrupted one. The checkpoint records what the run was given (the options, fingerprints of
the training and validation frames with their labels and of any starting weights, and what the
caller adds in ``inputs``), and a rerun with anything else is refused, finished or not.

``config.forces`` chooses the forces trained (:class:`~stablemd.training.config.TrainConfig`):
a ``direct`` run never differentiates with respect to positions, and every run validates (and
stops early, keeps its best epoch) on the forces the model gives in MD.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from stablemd.core.config_file import check_same_config
from stablemd.core.errors import InputError
from stablemd.core.files import (
    atomic_write,
    check_same_options,
    load_checkpoint,
    save_torch_file,
)
from stablemd.core.runtime import adapt_threads
from stablemd.core.throttle import PLOT_EVERY_S, Throttle
from stablemd.data.frames import FrameSet
from stablemd.models.potential import Potential, predict
from stablemd.models.registry import build_potential, model_fingerprint
from stablemd.training.config import TrainConfig, direct_head_refusal
from stablemd.training.loss import training_loss, training_properties
from stablemd.training.metrics import FORCE_KEYS, error_metrics
from stablemd.training.plots import plot_learning_curve
from stablemd.training.statistics import fit_energy_scaling

METRIC_COLUMNS = [
    "epoch",
    "learning_rate",
    "train_loss",
    "val_loss",
    "val_energy_mae_per_atom_eV",
    "val_forces_mae_eV_per_A",
    "elapsed_s",
]
#: The column of runs that train the direct head beside −∂E/∂r (``val_forces_mae_eV_per_A`` is
#: always the forces the model gives in MD: the direct head's for ``--forces direct``).
DIRECT_COLUMN = "val_direct_forces_mae_eV_per_A"


@dataclass
class TrainResult:
    potential: Potential
    history: list[dict]
    best_validation: dict
    elapsed_s: float


CHECKPOINT_FORMAT = "stablemd-train-checkpoint/1"
BUDGET_FIELDS = (
    "max_epochs",
    "max_time_minutes",
    "early_stopping_patience",
    "checkpoint_every_seconds",
)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def _write_metrics(history: list[dict], path: Path) -> None:
    # a subclass's own columns (e.g. dynamic training's window) follow the standard ones
    columns = list(dict.fromkeys(METRIC_COLUMNS + [key for row in history for key in row]))
    with atomic_write(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def new_potential(config: TrainConfig, elements: list[int]) -> Potential:
    """An untrained potential of the configured kind and dtype for ``elements``."""
    potential = build_potential(config.model, elements=elements, **config.model_options)
    return potential.to(getattr(torch, config.dtype))


class Trainer:
    """One training run: ``Trainer(...).run()`` trains, or continues, and returns the best model.

    ``potential`` starts the run from given weights (fine-tuning); by default a new model is built
    and its energy scaling is fitted on the training frames. ``inputs`` names further things the
    result depends on (e.g. the data file's fingerprint and the split); a checkpoint made with
    other inputs, frames, starting weights or options is refused.
    """

    def __init__(
        self,
        config: TrainConfig,
        train: FrameSet,
        validation: FrameSet,
        run_dir: Path,
        potential: Potential | None = None,
        progress: bool = True,
        after_batch: Callable[[int, int], None] | None = None,
        inputs: dict | None = None,
    ):
        self.config = config
        self.inputs = dict(inputs or {})
        self.frames_and_weights = {
            "train_frames": train.fingerprint,
            "validation_frames": validation.fingerprint,
            "initial_weights": None if potential is None else model_fingerprint(potential),
        }
        self.train_frames = train
        self.validation = validation
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.after_batch = after_batch
        torch.manual_seed(config.seed)
        if potential is None:
            potential = new_potential(config, train.elements())
            fit_energy_scaling(potential, train)
        if config.trains_direct_head and not potential.supports_direct_forces:
            raise InputError(direct_head_refusal(potential.kind, config))
        self.potential = potential
        self.properties = training_properties(config.conservative_weight, config.direct_weight)
        self.dtype = next(potential.parameters()).dtype
        self.ema = AveragedModel(
            potential, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
        )
        self.optimizer = torch.optim.Adam(potential.parameters(), lr=config.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=config.lr_factor, patience=config.lr_patience
        )
        self.epoch = 0
        self.batches_done = 0
        self.epoch_loss_sum = 0.0
        self.history: list[dict] = []
        self.plot = Throttle(
            lambda: plot_learning_curve(self.history, self.run_dir / "learning_curve.png"),
            PLOT_EVERY_S,
        )
        self.best = {"val_loss": float("inf"), "epoch": -1}
        self.best_state: dict | None = None
        self.epochs_since_best = 0
        self.elapsed_before = 0.0

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.model_dump(),
            "inputs": {**self.inputs, **self.frames_and_weights},
            "model": self.potential.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "epoch_loss_sum": self.epoch_loss_sum,
            "history": self.history,
            "best": self.best,
            "best_state": self.best_state,
            "epochs_since_best": self.epochs_since_best,
            "elapsed": self.elapsed_before + (time.perf_counter() - self._started),
        }

    def _restore(self, state: dict) -> None:
        # the caller's inputs and the options first: they name the cause of other frames
        saved_inputs = state.get("inputs", {})
        check_same_options(self.checkpoint_path, saved_inputs, self.inputs)
        check_same_config(self.checkpoint_path, state["config"], self.config, BUDGET_FIELDS)
        check_same_options(self.checkpoint_path, saved_inputs, self.frames_and_weights)
        self.potential.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for key in ("epoch", "batches_done", "epoch_loss_sum", "history", "best", "best_state"):
            setattr(self, key, state[key])
        self.epochs_since_best = state["epochs_since_best"]
        self.elapsed_before = state["elapsed"]

    def _checkpoint(self) -> None:
        save_torch_file(self._state(), self.checkpoint_path)
        self._last_checkpoint = time.perf_counter()

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._started)

    def _finished(self) -> bool:
        low_lr = self.optimizer.param_groups[0]["lr"] < self.config.min_learning_rate
        patience_over = self.epochs_since_best >= self.config.early_stopping_patience
        return self.epoch >= self.config.max_epochs or low_lr or patience_over

    def _out_of_time(self) -> bool:
        limit = self.config.max_time_minutes
        return limit is not None and self._elapsed() > 60.0 * limit

    def _loss(self, batch) -> torch.Tensor:
        """The training loss of one batch, with its graph to the parameters."""
        # −∂E/∂r enters the loss, so its graph is kept; without it (``direct``) there is no
        # derivative with respect to positions and the parameters' gradient is a first one
        conservative = "forces" in self.properties
        out = predict(self.potential, batch, self.properties, create_graph=conservative)
        return training_loss(
            batch,
            out,
            self.config.energy_weight,
            self.config.conservative_weight,
            self.config.direct_weight,
        )

    def _train_step(self, batch) -> float:
        self.potential.train()
        loss = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.potential.parameters(), self.config.gradient_clip)
        self.optimizer.step()
        self.ema.update_parameters(self.potential)
        return float(loss.detach())

    def _validate(self) -> dict:
        """Errors of the EMA weights on the validation frames; ``loss`` weighs the energy and
        the forces the model gives in MD (the direct head's for ``direct``, −∂E/∂r otherwise;
        a ``direct`` run computes no −∂E/∂r)."""
        model = self.ema.module.eval()
        config = self.config
        scored = "direct" if config.forces == "direct" else config.scored_forces
        metrics = error_metrics(model, self.validation, batch_size=64, forces=scored)
        energy_mse = metrics["energy_per_atom_eV"]["rmse"] ** 2
        force_mse = metrics[FORCE_KEYS[config.md_forces][0]]["rmse"] ** 2
        weight = config.direct_weight if config.md_forces == "direct" else config.forces_weight
        metrics["loss"] = config.energy_weight * energy_mse + weight * force_mse
        return metrics

    def _history_row(self, metrics: dict, n_batches: int) -> dict:
        """The row of ``metrics.csv`` for the epoch that ends, validated as ``metrics``."""
        row = {
            "epoch": self.epoch,
            "learning_rate": self.optimizer.param_groups[0]["lr"],
            "train_loss": self.epoch_loss_sum / max(n_batches, 1),
            "val_loss": metrics["loss"],
            "val_energy_mae_per_atom_eV": metrics["energy_per_atom_eV"]["mae"],
            "val_forces_mae_eV_per_A": metrics[FORCE_KEYS[self.config.md_forces][0]]["mae"],
            "elapsed_s": round(self._elapsed(), 2),
        }
        if self.config.trains_direct_head:
            row[DIRECT_COLUMN] = metrics[FORCE_KEYS["direct"][0]]["mae"]
        return row

    def _end_epoch(self, n_batches: int) -> None:
        metrics = self._validate()
        val_loss = metrics["loss"]
        self.history.append(self._history_row(metrics, n_batches))
        if val_loss < self.best["val_loss"]:
            self.best = {"val_loss": val_loss, "epoch": self.epoch, "metrics": metrics}
            self.best_state = {k: v.clone() for k, v in self.ema.module.state_dict().items()}
            self.epochs_since_best = 0
        else:
            self.epochs_since_best += 1
        self.scheduler.step(val_loss)
        self.epoch += 1
        self.batches_done = 0
        self.epoch_loss_sum = 0.0
        _write_metrics(self.history, self.run_dir / "metrics.csv")
        self.plot()

    def run(self) -> TrainResult:
        """Train until max epochs, early stopping, minimum lr or the time budget."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._started = time.perf_counter()
        state = load_checkpoint(self.checkpoint_path, CHECKPOINT_FORMAT, "training checkpoint")
        if state is not None:
            self._restore(state)
        self._last_checkpoint = time.perf_counter()
        columns = [
            TextColumn(f"[bold]training[/] epoch {{task.fields[epoch]}}/{self.config.max_epochs}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} batches"),
            TextColumn("val F-MAE {task.fields[fmae]} meV/Å"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, disable=not self.progress, transient=True) as bar:
            task = bar.add_task("", total=None, epoch=self.epoch, fmae="–")
            while not self._finished() and not self._out_of_time():
                # per epoch: a subclass may change the training set between epochs
                n_batches = -(-len(self.train_frames) // self.config.batch_size)
                order = _epoch_order(len(self.train_frames), self.config.seed, self.epoch)
                bar.update(task, total=n_batches, completed=self.batches_done, epoch=self.epoch)
                size = self.config.batch_size
                for b in range(self.batches_done, n_batches):
                    adapt_threads()
                    batch = self.train_frames.batch(order[b * size : (b + 1) * size])
                    self.epoch_loss_sum += self._train_step(batch)
                    self.batches_done = b + 1
                    bar.advance(task)
                    if self.after_batch is not None:
                        self.after_batch(self.epoch, self.batches_done)
                    if (
                        time.perf_counter() - self._last_checkpoint
                        > self.config.checkpoint_every_seconds
                    ):
                        self._checkpoint()
                    if self._out_of_time():
                        break
                if self.batches_done == n_batches:
                    self._end_epoch(n_batches)
                    fmae = self.history[-1]["val_forces_mae_eV_per_A"] * 1000
                    bar.update(task, completed=0, epoch=self.epoch, fmae=f"{fmae:.1f}")
                self._checkpoint()
        if self.history:
            self.plot.flush()
        if self.best_state is None:  # the budget ran out before a first epoch ended
            self.best = {"val_loss": float("nan"), "epoch": self.epoch, "metrics": self._validate()}
            self.best_state = self.ema.module.state_dict()
        best = build_potential(self.potential.kind, **self.potential.hyperparameters())
        best.to(self.dtype).load_state_dict(self.best_state)
        return TrainResult(best.eval(), self.history, self.best, self._elapsed())
