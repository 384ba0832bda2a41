"""The candidate pool of one explore step: uncertainty-biased MD of R replicas from training
structures (:class:`~stablemd.explore.uncertainty.bias.UncertaintyBiasedForces` in the batched
engine), a frame kept every k steps with its uncertainties, each replica stopped once an atom's
u passes the threshold (:class:`~stablemd.explore.uncertainty.bias.UncertaintyThreshold`; the
frame that passed it is kept too) or its numbers turn non-finite, the whole run at most
``steps`` long.

The MD checkpoints into ``checkpoint`` (the kept frames with it), so a pool cut short resumes
where it stopped and gives the pool an uninterrupted run gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from stablemd.explore.uncertainty.bias import UncertaintyBiasedForces, UncertaintyThreshold
from stablemd.explore.uncertainty.estimator import Uncertainty
from stablemd.md.monitoring import Observer
from stablemd.md.runner import run
from stablemd.md.settings import MDSettings
from stablemd.md.starts import initial_state
from stablemd.md.state import MDState
from stablemd.models.potential import Potential
from stablemd.monitors.criteria import NonFinite


class CandidateRecorder(Observer):
    """Keeps the positions of every active replica every ``every`` steps, and of a replica
    whose largest atomic u passes ``threshold`` at the step it does (the structure the stop
    hands over, which the runner freezes after this observer has seen it), with its replica,
    time (fs), total u (eV/atom) and largest atomic u (eV/Å). Never the start (a training
    structure), nor a frame with a non-finite position or u (whose replica the runner also
    freezes only after this observer has seen it). Called every step."""

    name = "candidates"

    def __init__(self, every: int, threshold: float | None = None):
        super().__init__(1)
        self.interval, self.threshold = int(every), threshold
        self.rows: list[dict] = []

    def __call__(self, state: MDState) -> None:
        if state.step == 0 or "atomic_uncertainty" not in state.outputs:
            return
        atomic = state.outputs["atomic_uncertainty"].detach().to(torch.float64)
        total = state.outputs["uncertainty"].detach().to(torch.float64)
        largest = state.max_per_system(atomic)
        keep = torch.full_like(state.active, state.step % self.interval == 0)
        if self.threshold is not None:
            keep |= largest > self.threshold
        broken = ~(
            torch.isfinite(state.positions).all(-1) & torch.isfinite(atomic) & torch.isfinite(total)
        )
        keep &= state.active & (state.sum_per_system(broken.to(torch.float64)) == 0)
        for k in torch.nonzero(keep)[:, 0].tolist():
            atoms = state.system_index == k
            self.rows.append({
                "replica": k,
                "time_fs": float(state.time_fs),
                "positions": state.positions[atoms].clone(),
                "cell": state.cell[k].clone(),
                "total_u": float(total[atoms][0]),
                "max_atomic_u": float(largest[k]),
            })  # fmt: skip

    def state_dict(self) -> dict:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = list(state_dict["rows"])


@dataclass
class Candidate:
    """One pool frame: the structure and where it came from."""

    atoms: Atoms
    replica: int
    time_fs: float
    total_u: float
    max_atomic_u: float


@dataclass
class Pool:
    """The frames of a pool run and why each replica stopped (time fs, reason; NaN/None: ran to
    the end)."""

    candidates: list[Candidate]
    stopped_fs: list[float]
    stopped_by: list[str | None]

    def to_dict(self) -> dict:
        return {
            "candidates": [
                {
                    "numbers": torch.as_tensor(c.atoms.numbers),
                    "positions": torch.as_tensor(c.atoms.positions),
                    "cell": torch.as_tensor(np.asarray(c.atoms.cell)),
                    "pbc": torch.as_tensor(c.atoms.pbc),
                    "replica": c.replica,
                    "time_fs": c.time_fs,
                    "total_u": c.total_u,
                    "max_atomic_u": c.max_atomic_u,
                }
                for c in self.candidates
            ],
            "stopped_fs": list(self.stopped_fs),
            "stopped_by": list(self.stopped_by),
        }

    @classmethod
    def from_dict(cls, values: dict) -> Pool:
        candidates = [
            Candidate(
                Atoms(
                    c["numbers"].numpy(),
                    c["positions"].numpy(),
                    cell=c["cell"].numpy(),
                    pbc=c["pbc"].numpy(),
                ),
                int(c["replica"]),
                float(c["time_fs"]),
                float(c["total_u"]),
                float(c["max_atomic_u"]),
            )  # fmt: skip
            for c in values["candidates"]
        ]
        return cls(candidates, list(values["stopped_fs"]), list(values["stopped_by"]))


def run_pool(
    potential: Potential,
    uncertainty: Uncertainty,
    starts: list[Atoms],
    settings: MDSettings,
    steps: int,
    every: int,
    tau: float,
    threshold: float | None,
    checkpoint: Path | None = None,
    progress: bool = False,
) -> Pool:
    """``settings.replicas`` replicas drawn from ``starts``, biased with strength ``tau``, run
    ``steps`` steps at most; frames every ``every`` steps (see the module docstring)."""
    state = initial_state(starts, settings.replicas, settings.temperature_K, settings.seed)
    term = UncertaintyBiasedForces(potential, uncertainty, tau)
    recorder = CandidateRecorder(every, threshold)
    stops = [UncertaintyThreshold(threshold)] if threshold is not None else []
    result = run(
        state, settings.integrator(), term, steps, [NonFinite(), *stops, recorder],
        checkpoint=checkpoint, checkpoint_every=max(every, 50), progress=progress,
        label="pool",
    )  # fmt: skip
    numbers = state.numbers
    candidates = []
    for row in recorder.rows:
        k = row["replica"]
        atoms = Atoms(
            numbers[state.system_index == k].numpy(), row["positions"].numpy(),
            cell=row["cell"].numpy(), pbc=state.pbc[k].numpy(),
        )  # fmt: skip
        candidates.append(Candidate(atoms, k, row["time_fs"], row["total_u"], row["max_atomic_u"]))
    return Pool(candidates, result.unstable_time_fs.tolist(), list(result.unstable_reason))
