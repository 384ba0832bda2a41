"""The dynamic-training loop: :class:`~stablemd.training.trainer.Trainer` with rollout windows
as its batches, rollout validation and the growing-window curriculum.

Everything else (Adam, EMA, checkpoints every 30 s and after each epoch, resume after
``kill -9`` with the same batches, the refusal of other inputs) is the trainer's. The
checkpoint adds the window size, whether the curriculum has ended and the best EMA weights of
each window size. The run directory gets ``rollout_errors.json`` (force error against rollout
step of the best model of each window size, updated at each improvement), its figure
``rollout_errors.png`` (when a window size ends, and at the end) and, at the end,
``best_window_<S>.pt`` for each S.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from stablemd.core.files import write_json
from stablemd.data.frames import FrameSet
from stablemd.data.trajectories import Trajectory
from stablemd.fix.dynamic_training.config import DynamicTrainConfig
from stablemd.fix.dynamic_training.loss import dynamic_loss
from stablemd.fix.dynamic_training.plots import plot_rollout_errors
from stablemd.fix.dynamic_training.rollout import DifferentiableForces, rollout
from stablemd.fix.dynamic_training.validation import rollout_force_errors, rollout_starts
from stablemd.fix.dynamic_training.windows import TrainingWindows, WindowBatch, common_time_step
from stablemd.models.potential import Potential
from stablemd.models.registry import save_potential
from stablemd.training.metrics import error_metrics
from stablemd.training.trainer import Trainer, TrainResult


def json_safe(value):
    """``value`` with infinite numbers (exploded rollouts) as None, for JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


class DynamicTrainer(Trainer):
    """Dynamic training on ``train_runs`` (runs of consecutive training frames), validated by
    rollouts from ``val_runs``; ``train`` and ``validation`` are the same frames as a
    :class:`FrameSet` (energy scaling, fingerprints, single-frame errors)."""

    config: DynamicTrainConfig

    def __init__(
        self,
        config: DynamicTrainConfig,
        train_runs: Sequence[Trajectory],
        val_runs: Sequence[Trajectory],
        train: FrameSet,
        validation: FrameSet,
        run_dir: Path,
        potential: Potential | None = None,
        progress: bool = True,
        inputs: dict | None = None,
    ):
        super().__init__(
            config, train, validation, run_dir, potential=potential, progress=progress,
            inputs=inputs,
        )  # fmt: skip
        self.train_runs, self.val_runs = list(train_runs), list(val_runs)
        common_time_step(self.train_runs + self.val_runs, "training and validation frames")
        TrainingWindows(self.train_runs, config.window_max)  # refused now, not at the last S
        rollout_starts(self.val_runs, config.validation_rollout_steps)
        self.scheduler = self._new_scheduler()
        self.term = DifferentiableForces(self.potential)
        self.window = config.window_start
        self.train_frames = TrainingWindows(self.train_runs, self.window)
        self.windows_best: dict[int, dict] = {}
        self.curriculum_done = False
        self._last_validation: dict = {}

    def _new_scheduler(self):
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            factor=self.config.lr_factor,
            patience=self.config.lr_patience,
            min_lr=self.config.min_learning_rate,
        )

    def _loss(self, batch: WindowBatch) -> torch.Tensor:
        through_time = self.config.backprop == "through-time"
        forces, energy = rollout(
            self.term, batch.start, batch.size, batch.every, batch.timestep_fs, through_time
        )
        return dynamic_loss(
            forces, batch.forces, batch.start.numbers, self.config.frame0_weight,
            energy, batch.energy, batch.start.atoms_per_system, self.config.energy_weight,
        )  # fmt: skip

    def _validate(self) -> dict:
        """Single-frame errors of the EMA weights on the validation frames, and their force
        errors along rollouts; the loss is the mean rollout force MAE."""
        model = self.ema.module.eval()
        metrics = error_metrics(model, self.validation, batch_size=64, forces="conservative")
        metrics["rollout"] = rollout_force_errors(
            model, self.val_runs, self.config.validation_rollout_steps
        )
        metrics["loss"] = metrics["rollout"]["mae"]
        self._last_validation = metrics
        return metrics

    def _history_row(self, metrics: dict, n_batches: int) -> dict:
        row = super()._history_row(metrics, n_batches)
        row["window"] = self.window
        row["val_rollout_forces_mae_eV_per_A"] = metrics["rollout"]["mae"]
        row["val_rollouts_exploded"] = metrics["rollout"]["exploded"]
        return row

    def _end_epoch(self, n_batches: int) -> None:
        super()._end_epoch(n_batches)
        val_loss = self.history[-1]["val_loss"]
        best = self.windows_best.get(self.window)
        if best is None or val_loss < best["val_loss"]:
            self.windows_best[self.window] = {
                "epoch": self.history[-1]["epoch"],
                "val_loss": val_loss,
                "rollout": self._last_validation["rollout"],
                "state": {k: v.clone() for k, v in self.ema.module.state_dict().items()},
            }
            self._write_rollout_record(plot=False)
        if self.optimizer.param_groups[0]["lr"] <= self.config.min_learning_rate * (1 + 1e-9):
            if self.window < self.config.window_max:
                self._grow_window()
            else:
                self.curriculum_done = True

    def _grow_window(self) -> None:
        """S += 1; the rate restarts at ``restart_learning_rate`` with a fresh schedule."""
        self._write_rollout_record(plot=True)
        self.window += 1
        self.train_frames = TrainingWindows(self.train_runs, self.window)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.restart_learning_rate
        self.scheduler = self._new_scheduler()
        self.epochs_since_best = 0

    def _finished(self) -> bool:
        return self.curriculum_done or super()._finished()

    def _write_rollout_record(self, plot: bool) -> None:
        """``rollout_errors.json`` (every improvement) and, when ``plot``, its figure (when a
        window size ends and at the end of the run)."""
        record = {
            str(size): {"best_epoch": best["epoch"], **best["rollout"]}
            for size, best in sorted(self.windows_best.items())
        }
        write_json({"windows": json_safe(record)}, self.run_dir / "rollout_errors.json")
        if not plot:
            return
        curves = {
            f"S = {size} (epoch {best['epoch']})": best["rollout"]
            for size, best in sorted(self.windows_best.items())
        }
        plot_rollout_errors(
            curves, self.run_dir / "rollout_errors.png", "best model of each window size S"
        )

    def _state(self) -> dict:
        return {
            **super()._state(),
            "window": self.window,
            "windows_best": self.windows_best,
            "curriculum_done": self.curriculum_done,
        }

    def _restore(self, state: dict) -> None:
        super()._restore(state)
        self.window = state["window"]
        self.windows_best = state["windows_best"]
        self.curriculum_done = state["curriculum_done"]
        self.train_frames = TrainingWindows(self.train_runs, self.window)

    def run(self) -> TrainResult:
        """Train through the curriculum; also write the best model of each window size."""
        result = super().run()
        if self.windows_best:
            self._write_rollout_record(plot=True)
        for size, best in self.windows_best.items():
            # a copy, not a new build: building a MACE compiles its TorchScript code (seconds)
            model = copy.deepcopy(result.potential)
            model.load_state_dict(best["state"])
            record = {"window": size, "epoch": best["epoch"], "rollout": best["rollout"]}
            save_potential(
                model, self.run_dir / f"best_window_{size}.pt", {"dynamic_training": record}
            )
        return result
