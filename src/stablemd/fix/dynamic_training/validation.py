"""Validation by long rollouts: the model's force error against rollout step.

From non-overlapping starts in the validation runs, the model drives velocity Verlet (the
engine's integrator and its inference force term) for ``steps`` frames, all starts as
replicas of one batch, and its forces at each frame are compared with the reference forces of
that frame (the paper's Figure 2). A replica whose state stops being finite counts as an
infinite error from then on, so a model that explodes is never the best.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from ase.data import chemical_symbols

from stablemd.core.errors import InputError
from stablemd.data.trajectories import Trajectory
from stablemd.fix.dynamic_training.windows import window_batch
from stablemd.md.forces import ModelForces
from stablemd.md.integrators import VelocityVerlet
from stablemd.models.potential import Potential


def rollout_starts(runs: Sequence[Trajectory], steps: int) -> tuple[list[tuple[int, int]], int]:
    """Non-overlapping starts of ``steps``-step rollouts in ``runs`` ((run, frame) pairs) and
    the steps they take: ``steps``, or fewer when no run is that long."""
    longest = max((len(run) for run in runs), default=0)
    if longest < 2:
        raise InputError(
            "validation by rollouts needs consecutive validation frames, but no two are "
            "consecutive; split by trajectory (--split-by trajectory)"
        )
    steps = min(steps, longest - 1)
    starts = [(r, j) for r, run in enumerate(runs) for j in range(0, len(run) - steps, steps + 1)]
    return starts, steps


def rollout_force_errors(potential: Potential, runs: Sequence[Trajectory], steps: int) -> dict:
    """Force MAE (eV/Å) at each rollout step of ``potential`` from the validation ``runs``:
    ``mae_per_step`` [steps + 1] (step 0 is the start frame), ``per_element`` (symbol →
    list), ``mae`` (mean over steps 1..steps, the validation loss), ``n_rollouts``,
    ``exploded`` (rollouts that stopped being finite)."""
    starts, steps = rollout_starts(runs, steps)
    windows = window_batch(runs, starts, steps + 1)
    state, term = windows.start, ModelForces(potential)
    integrator = VelocityVerlet(windows.timestep_fs)
    numbers = state.numbers
    elements = sorted(set(numbers.tolist()))
    finite = torch.ones(state.n_atoms, dtype=torch.bool)
    overall, per_element = [], {chemical_symbols[z]: [] for z in elements}
    for k in range(steps + 1):
        if k == 0:
            state = integrator.prepare(state, term)
        else:
            for _ in range(windows.every):
                state = integrator.step(state, term)
        ok = torch.isfinite(state.positions).all(1) & torch.isfinite(state.forces).all(1)
        finite &= (state.sum_per_system(ok.double()) == state.atoms_per_system)[state.system_index]
        # a replica that blew up goes on as a frozen one, its error infinite from then on
        state = replace(state, active=state.active & _per_system(state, finite))
        error = (state.forces - windows.forces[k]).abs().mean(dim=1)
        error = torch.where(finite, error, torch.full_like(error, math.inf))
        overall.append(float(error.mean()))
        for z in elements:
            per_element[chemical_symbols[z]].append(float(error[numbers == z].mean()))
    return {
        "mae": sum(overall[1:]) / steps,
        "mae_per_step": overall,
        "per_element": per_element,
        "steps": steps,
        "n_rollouts": len(starts),
        "exploded": int((~_per_system(state, finite)).sum()),
        "frame_spacing_fs": windows.timestep_fs * windows.every,
    }


def _per_system(state, per_atom: torch.Tensor) -> torch.Tensor:
    return state.sum_per_system((~per_atom).double()) == 0
