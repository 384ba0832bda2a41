"""The MD loop: integrate, call monitors on their own intervals, freeze unstable replicas,
checkpoint.

Monitors (:mod:`stablemd.md.monitoring`) run on the starting state and after every step that
is a multiple of their ``every``. All monitors of a step see the same state; replicas that a
criterion flags are frozen after them (so a trajectory writer still records the frame at which a
replica was found unstable), with the time (fs) and the criterion's name recorded.

A run with ``checkpoint`` set resumes from that file when it exists: the integrator's random
generator and the monitors are restored too, so a run stopped at any moment and started again
gives the same result as one that never stopped. The checkpoint is written every
``checkpoint_every`` steps, at least every ``checkpoint_seconds`` of wall time, and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from stablemd.core.files import check_same_options, load_checkpoint, save_torch_file
from stablemd.core.runtime import adapt_threads
from stablemd.md.forces import ForceLevels, ForceResult, ForceTerm
from stablemd.md.integrators import Integrator
from stablemd.md.monitoring import Criterion, Monitor
from stablemd.md.state import MDState, state_from_dict, state_to_dict

CHECKPOINT_FORMAT = "stablemd-md-checkpoint/2"


@dataclass
class RunResult:
    """Final state; first unstable time per replica [n_systems] fs (NaN: never unstable) and
    the name of the criterion that flagged it (None: never); wall time and the part of it spent
    in force evaluation (s); steps integrated in this call."""

    state: MDState
    unstable_time_fs: torch.Tensor
    unstable_reason: list[str | None]
    wall_time_s: float
    force_time_s: float
    steps: int


class _Clock:
    """Adds up the wall time spent in force terms."""

    def __init__(self):
        self.seconds = 0.0

    def timed(self, term: ForceTerm) -> ForceTerm:
        """``term`` with its calls timed (each level of a :class:`ForceLevels` on its own)."""
        if isinstance(term, ForceLevels):
            return ForceLevels(self.timed(term.fast), self.timed(term.slow))

        def call(state: MDState) -> ForceResult:
            start = time.perf_counter()
            out = term(state)
            self.seconds += time.perf_counter() - start
            return out

        return call


class _Verdicts:
    """First unstable time and reason per replica; freezes the replicas criteria flag."""

    def __init__(self, n_replicas: int):
        self.time_fs = torch.full((n_replicas,), float("nan"), dtype=torch.float64)
        self.reason: list[str | None] = [None] * n_replicas

    def observe(self, state: MDState, monitors: Sequence[Monitor]) -> MDState:
        """Call the monitors due at this step; returns the state with flagged replicas frozen."""
        newly = torch.zeros_like(state.active)
        for monitor in monitors:
            if state.step % monitor.every:
                continue
            verdict = monitor(state)
            if isinstance(monitor, Criterion):
                flagged = verdict & state.active & ~newly
                for k in torch.nonzero(flagged)[:, 0].tolist():
                    self.reason[k] = monitor.name
                newly |= flagged
        if not bool(newly.any()):
            return state
        self.time_fs[newly] = state.time_fs
        return replace(state, active=state.active & ~newly)

    def state_dict(self) -> dict:
        return {"time_fs": self.time_fs.clone(), "reason": list(self.reason)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.time_fs, self.reason = state_dict["time_fs"].clone(), list(state_dict["reason"])


def _layout(state: MDState, integrator: Integrator, monitors: Sequence[Monitor]) -> dict:
    """What a checkpoint must match to be resumed by this run."""
    bath = integrator.thermostat
    layout = {
        "replicas": state.n_systems,
        "atoms": state.n_atoms,
        "integrator": type(integrator).__name__,
        "step_fs": integrator.step_fs,
        "thermostat": None if bath is None else {"kind": type(bath).__name__, **bath.settings()},
        "monitors": [f"{m.name} every {m.every}" for m in monitors],
    }
    if integrator.barostat is not None:  # absent at constant volume, as in older checkpoints
        barostat = integrator.barostat
        layout["barostat"] = {"kind": type(barostat).__name__, **barostat.settings()}
    return layout


def _progress_bar(enabled: bool, label: str) -> Progress:
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        TextColumn("{task.fields[ps]} ps"),
        TextColumn("{task.fields[rate]} ps/day"),
        TextColumn("{task.fields[active]} replicas active"),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def run(
    state: MDState,
    integrator: Integrator,
    term: ForceTerm,
    n_steps: int,
    monitors: Sequence[Monitor] = (),
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    checkpoint_seconds: float = 120.0,
    progress: bool = True,
    label: str = "MD",
) -> RunResult:
    """Integrate until ``state.step + n_steps`` (or until every replica is frozen)."""
    if checkpoint_every < 1 or n_steps < 0 or not checkpoint_seconds > 0:
        raise ValueError("need checkpoint_every ≥ 1, checkpoint_seconds > 0 and n_steps ≥ 0")
    started = time.perf_counter()
    end_step = state.step + n_steps
    clock = _Clock()
    term = clock.timed(term)
    verdicts = _Verdicts(state.n_systems)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    layout = _layout(state, integrator, monitors)
    saved = None
    if checkpoint is not None:
        saved = load_checkpoint(checkpoint, CHECKPOINT_FORMAT, "stablemd MD checkpoint")
    if saved is not None:
        check_same_options(checkpoint, saved["layout"], layout)
        state = state_from_dict(saved["state"])
        verdicts.load_state_dict(saved["verdicts"])
        integrator.load_state_dict(saved["integrator"])
        for monitor, monitor_state in zip(monitors, saved["monitors"], strict=True):
            if monitor_state is not None:
                monitor.load_state_dict(monitor_state)
    else:
        state = integrator.prepare(state, term)
        state = verdicts.observe(state, monitors)

    def save() -> None:
        nonlocal saved_step, saved_at
        if checkpoint is None or saved_step == state.step:
            return
        save_torch_file(
            {
                "format": CHECKPOINT_FORMAT,
                "layout": layout,
                "state": state_to_dict(state),
                "verdicts": verdicts.state_dict(),
                "integrator": integrator.state_dict(),
                "monitors": [m.state_dict() for m in monitors],
            },
            checkpoint,
        )
        saved_step, saved_at = state.step, time.perf_counter()

    saved_step = state.step if saved is not None else None
    saved_at = time.perf_counter()
    start_step, start_fs = state.step, state.time_fs
    end_ps = (state.time_fs + (end_step - state.step) * integrator.step_fs) / 1000
    n_active = int(state.active.sum())
    with _progress_bar(progress, label) as bar:
        task = bar.add_task("md", total=max(end_step - start_step, 1), ps="", rate="", active="")
        while state.step < end_step and n_active > 0:
            adapt_threads()
            state = integrator.step(state, term)
            state = verdicts.observe(state, monitors)
            n_active = int(state.active.sum())
            if (
                state.step % checkpoint_every == 0
                or time.perf_counter() - saved_at > checkpoint_seconds
            ):
                save()
            if progress:
                elapsed = time.perf_counter() - started
                # fs per s × 86400 s/day / 1000 fs/ps
                ps_per_day = (state.time_fs - start_fs) / max(elapsed, 1e-9) * 86.4
                bar.update(
                    task,
                    completed=state.step - start_step,
                    ps=f"{state.time_fs / 1000:.3f}/{end_ps:.3f}",
                    rate=f"{ps_per_day:.1f}",
                    active=f"{n_active}/{state.n_systems}",
                )
        save()
    return RunResult(
        state=state,
        unstable_time_fs=verdicts.time_fs,
        unstable_reason=verdicts.reason,
        wall_time_s=time.perf_counter() - started,
        force_time_s=clock.seconds,
        steps=state.step - start_step,
    )
