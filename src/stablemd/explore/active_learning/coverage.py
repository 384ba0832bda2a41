"""The explore loop's per-step coverage of conformational space, for systems that name their
backbone dihedrals (alanine dipeptide): the Ramachandran coverage
(:func:`stablemd.analysis.ramachandran.ramachandran_coverage`) of the pool's frames and of
every label so far, stored in the learning curve under ``step_metrics``."""

from __future__ import annotations

from stablemd.analysis.ramachandran import BACKBONE, ramachandran_coverage
from stablemd.data.database import read_frames
from stablemd.explore.active_learning.loop import StepContext, StepMetrics
from stablemd.systems.system import System


def ramachandran_metrics(system: System) -> StepMetrics | None:
    """The hook for ``system`` (None when it names no φ and ψ): per step, the coverage of the
    labelled set (``labelled``) and of the pool's candidate frames (``pool``, when it ran)."""
    if not all(name in system.dihedrals for name in BACKBONE):
        return None

    def metrics(context: StepContext) -> dict:
        values = {"labelled": ramachandran_coverage(read_frames(context.train_db), system)}
        if context.pool is not None and context.pool.candidates:
            frames = [candidate.atoms for candidate in context.pool.candidates]
            values["pool"] = ramachandran_coverage(frames, system)
        return values

    return metrics
