"""The MD loop: integrate, call observers every k steps, freeze unstable replicas, checkpoint.

Observers are callables ``observer(state)``. One that returns a boolean tensor [n_systems] is a
stability criterion: replicas it flags (True = unstable) are frozen and their first unstable
time (fs) recorded. All observers of a step see the same state; freezing happens after them,
so a trajectory writer still records the frame at which a replica was found unstable.
Observers with ``state_dict``/``load_state_dict`` are checkpointed with the run.

A run with ``checkpoint`` set resumes from that file when it exists: the integrator's random
generator, the snapshots and the observers are restored too, so a run stopped at any moment and
started again gives the same result as one that never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from stablemd.errors import InputError
from stablemd.md.checkpoint import load_md_checkpoint, save_md_checkpoint
from stablemd.md.forces import ForceTerm
from stablemd.md.integrators import Integrator
from stablemd.md.snapshots import Snapshots
from stablemd.md.state import MDState


@dataclass
class RunResult:
    """Final state; first unstable time per replica [n_systems] fs (NaN: never unstable);
    the snapshot buffer (None without snapshots); wall time and the part of it spent in
    force evaluation (s); steps integrated in this call."""

    state: MDState
    unstable_time_fs: torch.Tensor
    snapshots: Snapshots | None
    wall_time_s: float
    force_time_s: float
    steps: int


class _TimedForces:
    """A force term that adds up the wall time spent in it."""

    def __init__(self, forces_fn: ForceTerm):
        self.forces_fn = forces_fn
        self.seconds = 0.0

    def __call__(self, state: MDState):
        start = time.perf_counter()
        out = self.forces_fn(state)
        self.seconds += time.perf_counter() - start
        return out


def _observe(state: MDState, observers: Sequence[Callable], unstable_time_fs: torch.Tensor):
    """Call every observer; freeze replicas any criterion flags. Returns the new state."""
    flags = [out for obs in observers if isinstance(out := obs(state), torch.Tensor)]
    flagged = [f for f in flags if f.dtype == torch.bool]
    if not flagged:
        return state
    newly = torch.stack(flagged).any(dim=0) & state.active
    if not bool(newly.any()):
        return state
    unstable_time_fs[newly] = state.time_fs
    return replace(state, active=state.active & ~newly)


def _check_resumable(saved: dict, fresh: MDState, observers: Sequence, path: Path) -> None:
    state = saved["state"]
    if state.n_systems != fresh.n_systems or state.n_atoms != fresh.n_atoms:
        raise InputError(
            f"{path}: checkpoint has {state.n_systems} replicas of {state.n_atoms} atoms in "
            f"all, this run {fresh.n_systems} of {fresh.n_atoms}; use a new output location"
        )
    if len(saved["observers"]) != len(observers):
        raise InputError(
            f"{path}: checkpoint was written with {len(saved['observers'])} observers, this run "
            f"has {len(observers)} (another version or setting); use a new output location"
        )


def _progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]MD"),
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
    forces_fn: ForceTerm,
    n_steps: int,
    observers: Sequence[Callable] = (),
    every: int = 100,
    snapshot_every: int | None = None,
    n_snapshots: int = 10,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 1000,
    progress: bool = True,
) -> RunResult:
    """Integrate until ``state.step + n_steps`` (or until every replica is frozen).

    Observers run every ``every`` steps (and on the starting state); a snapshot is kept every
    ``snapshot_every`` steps, the last ``n_snapshots`` of them; the checkpoint file is written
    every ``checkpoint_every`` steps and at the end.
    """
    if every < 1 or checkpoint_every < 1 or n_steps < 0:
        raise ValueError("need every ≥ 1, checkpoint_every ≥ 1 and n_steps ≥ 0")
    started = time.perf_counter()
    end_step = state.step + n_steps
    timed = _TimedForces(forces_fn)
    snapshots = Snapshots(snapshot_every, n_snapshots) if snapshot_every else None
    unstable_time_fs = torch.full((state.n_systems,), float("nan"), dtype=torch.float64)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    saved = load_md_checkpoint(checkpoint) if checkpoint is not None else None
    if saved is not None:
        _check_resumable(saved, state, observers, checkpoint)
        state, unstable_time_fs = saved["state"], saved["unstable_time_fs"]
        integrator.load_state_dict(saved["integrator"])
        for observer, observer_state in zip(observers, saved["observers"], strict=True):
            if observer_state is not None:
                observer.load_state_dict(observer_state)
        if snapshots is not None and saved["snapshots"] is not None:
            snapshots.load_state_dict(saved["snapshots"])
    else:
        state = integrator.prepare(state, timed)
        if state.step % every == 0:
            state = _observe(state, observers, unstable_time_fs)
        if snapshots is not None and state.step % snapshots.every == 0:
            snapshots.add(state)

    def save() -> None:
        nonlocal saved_step
        if checkpoint is None or saved_step == state.step:
            return
        save_md_checkpoint(
            checkpoint,
            state,
            unstable_time_fs=unstable_time_fs,
            integrator=integrator.state_dict(),
            observers=[getattr(o, "state_dict", lambda: None)() for o in observers],
            snapshots=None if snapshots is None else snapshots.state_dict(),
        )
        saved_step = state.step

    saved_step = state.step if saved is not None else None
    start_step, start_fs = state.step, state.time_fs
    end_ps = (state.time_fs + (end_step - state.step) * integrator.dt) / 1000
    n_active = int(state.active.sum())
    with _progress_bar(progress) as bar:
        task = bar.add_task("md", total=max(end_step - start_step, 1), ps="", rate="", active="")
        while state.step < end_step and n_active > 0:
            state = integrator.step(state, timed)
            if state.step % every == 0:
                state = _observe(state, observers, unstable_time_fs)
                n_active = int(state.active.sum())
            if snapshots is not None and state.step % snapshots.every == 0:
                snapshots.add(state)
            if state.step % checkpoint_every == 0:
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
        unstable_time_fs=unstable_time_fs,
        snapshots=snapshots,
        wall_time_s=time.perf_counter() - started,
        force_time_s=timed.seconds,
        steps=state.step - start_step,
    )
